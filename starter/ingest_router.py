"""Routes what the HTTP event API accepted into contacts and journeys, in the background.

The service runs one `IngestRouter` beside its HTTP server. It reads the ingest
queue in the order messages were accepted and calls the client for each:
`contact_for` then `identify` or `track`, or `alias`. One sender's messages (a
stream) go one at a time, in order; different senders' go concurrently.

- A message that fails for a passing reason (Temporal or the database
  unreachable) keeps its place, with its error, and is tried again after a
  growing pause; the messages behind it in its stream wait for it.
- A message that can never route (its properties break a journey's declared
  schema, its event id was used for another event, ...) is marked dead with the
  reason; `tidings ingest list --state dead` shows it, `tidings ingest retry`
  queues it again once the cause is fixed.
- On start it routes whatever was accepted and not yet routed, so a crash
  between the 200 and the routing loses nothing. Routing a message twice (a
  crash after the journey got it but before the queue knew) is harmless: its
  event id, made from the messageId, makes the second `track` a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import TypeAdapter

from tidings.db import ingest_queue
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.models.ingest import QueuedAlias, QueuedIdentify, QueuedMessage, QueuedTrack
from tidings.starter.client import TidingsClient

log = structlog.get_logger(__name__)

_QUEUED: TypeAdapter[QueuedIdentify | QueuedTrack | QueuedAlias] = TypeAdapter(QueuedMessage)
MAX_BACKOFF = timedelta(minutes=5)
STOP_GRACE_SECONDS = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int) -> timedelta:
    """The pause after the `attempts`-th failure: 1 s, 2 s, 4 s, ... up to 5 minutes,
    with jitter so that many failed messages do not all come back at once."""
    seconds = min(2.0 ** (attempts - 1), MAX_BACKOFF.total_seconds())
    return timedelta(seconds=seconds * random.uniform(0.8, 1.0))


class IngestRouter:
    def __init__(
        self,
        database: Database,
        client: TidingsClient,
        *,
        concurrency: int = 16,
        batch_size: int = 256,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """`concurrency`: streams routed at once; `poll_seconds`: how often the queue is
        read when nothing wakes the router (messages accepted by another process, retries)."""
        self.database = database
        self.client = client
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was accepted: read the queue now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Route until `stop` is set; a pass in progress finishes first."""
        while not stop.is_set():
            self._wake.clear()
            try:
                attempted = await self.route_ready()
            except Exception:  # the database itself failing: keep the service up, try again
                log.exception("ingest routing pass failed")
                attempted = 0
            if attempted:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await _first(self._wake.wait(), stop.wait())

    async def route_ready(self) -> int:
        """One pass over the messages ready now; how many were attempted."""
        now = self._clock()
        ready = await self.database.run(
            lambda session: ingest_queue.ready(session=session, now=now, limit=self.batch_size)
        )
        streams: dict[str, list[ingest_queue.Ready]] = {}
        for message in ready:
            streams.setdefault(message.stream, []).append(message)
        routed: list[int] = []
        dead: dict[int, str] = {}
        retry: dict[int, ingest_queue.Retry] = {}
        slots = asyncio.Semaphore(self.concurrency)

        async def route_stream(messages: list[ingest_queue.Ready]) -> None:
            async with slots:
                for message in messages:
                    try:
                        await self._route(_QUEUED.validate_python(message.payload))
                    except TidingsError as err:
                        dead[message.id] = str(err)
                        # The id and the error's kind only: messages carry personal data.
                        log.warning("ingest message dead", id=message.id, error=type(err).__name__)
                        continue
                    except Exception as err:
                        pause = backoff(message.attempts + 1)
                        retry[message.id] = ingest_queue.Retry(
                            f"{type(err).__name__}: {err}", self._clock() + pause
                        )
                        log.info(
                            "ingest message will be retried",
                            id=message.id,
                            error=type(err).__name__,
                            in_seconds=round(pause.total_seconds(), 1),
                        )
                        return  # the rest of the stream waits behind it
                    routed.append(message.id)

        await asyncio.gather(*(route_stream(messages) for messages in streams.values()))
        if ready:
            await self.database.run(
                lambda session: ingest_queue.record_outcomes(
                    session=session, routed=routed, dead=dead, retry=retry, now=self._clock()
                )
            )
        return len(routed) + len(dead) + len(retry)

    async def _route(self, message: QueuedIdentify | QueuedTrack | QueuedAlias) -> None:
        client = self.client
        if isinstance(message, QueuedAlias):
            await client.alias(message.previous_id, message.user_id)
            return
        key = await client.contact_for(user_id=message.user_id, anonymous_id=message.anonymous_id)
        if isinstance(message, QueuedIdentify):
            await client.identify(
                key,
                emails=message.emails,
                phones=message.phones,
                timezone=message.timezone,
                locale=message.locale,
                jurisdiction=message.jurisdiction,
                traits=message.traits,
            )
            return
        await client.track(
            key,
            message.event,
            message.properties,
            event_id=message.event_id,
            occurred_at=message.occurred_at,
        )


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    """Return once any of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


@asynccontextmanager
async def running_router(router: IngestRouter) -> AsyncIterator[IngestRouter]:
    """Route in the background while the block runs (the service's lifetime)."""
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop), name="ingest-router")
    try:
        yield router
    finally:
        stop.set()
        router.wake()
        try:
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)
        except TimeoutError:
            # Cut short: whatever was mid-route stays pending and routes next start.
            log.warning("ingest router stopped mid-pass")
