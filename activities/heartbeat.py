"""Heartbeats for synchronous activities, so a worker that dies is noticed in seconds.

Without a heartbeat the server learns of a killed worker only when the
attempt's start-to-close timeout runs out (minutes for a send). A thread
beats while the activity runs; it says "this process lives", not "this
attempt makes progress": the start-to-close timeout still bounds a hung call.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from temporalio import activity

log = structlog.get_logger(__name__)


@contextmanager
def kept_alive() -> Iterator[None]:
    """Heartbeat a few times per heartbeat timeout until the block ends (none set: no-op)."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    every = timeout.total_seconds() / 6
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                activity.heartbeat()
            except Exception as err:  # the attempt goes on; only its liveness signal stops
                log.warning("heartbeat failed", error=f"{type(err).__name__}: {err}")
                return

    activity.heartbeat()
    # The activity's context (its info and heartbeat function) goes with the thread.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(beat,), name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
