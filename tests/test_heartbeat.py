"""Send attempts heartbeat, so a send on a worker that died is retried in seconds."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

from support import Stack, activity_env, run_onboarding
from temporalio import activity

from tidings.activities.heartbeat import kept_alive
from tidings.workflows.interpreter import SEND_HEARTBEAT


def heartbeat_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "heartbeat"]


def test_an_activity_beats_while_it_runs_and_stops_when_it_ends() -> None:
    env = activity_env()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    beats: list[tuple[object, ...]] = []
    enough = threading.Event()

    def on_heartbeat(*details: object) -> None:
        beats.append(details)
        if len(beats) >= 3:
            enough.set()

    env.on_heartbeat = on_heartbeat

    @activity.defn
    def waits_for_three_beats() -> bool:
        with kept_alive():
            return enough.wait(30)

    assert env.run(waits_for_three_beats) is True
    assert heartbeat_threads() == []


def test_without_a_heartbeat_timeout_nothing_beats() -> None:
    env = activity_env()
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    @activity.defn
    def quick() -> int:
        with kept_alive():
            return len(heartbeat_threads())

    assert env.run(quick) == 0
    assert beats == []


async def test_a_journeys_sends_are_scheduled_with_the_heartbeat_timeout(
    stack: Stack, contact_key: str
) -> None:
    await run_onboarding(stack, contact_key)

    history = await stack.handle("onboarding", contact_key).fetch_history()
    sends = [
        event.activity_task_scheduled_event_attributes
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]
    assert len(sends) == 3
    assert {s.heartbeat_timeout.ToTimedelta() for s in sends} == {SEND_HEARTBEAT}
