"""Send priority: when a channel's queue is saturated, urgent purposes go first."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from support import eventually, running_stack
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.common import Priority
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tidings.settings import PACKAGE_DIR
from tidings.starter.smtp_sink import SmtpSink
from tidings.workflows.interpreter import SEND_PRIORITY

QUICK_JOURNEYS = PACKAGE_DIR / "tests" / "fixtures" / "quick-journeys"


async def test_a_send_is_scheduled_with_its_purposes_priority(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    async with running_stack(
        dev_server, data_dir=tmp_path, smtp=smtp, journeys_dir=QUICK_JOURNEYS
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=["p@example.com"])
        await stack.client.track(contact_key, "joined")
        await stack.result("once", contact_key)
        history = await stack.handle("once", contact_key).fetch_history()

    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled.priority.priority_key == SEND_PRIORITY["service"]  # `once` sends service


DISPATCHED: list[str] = []


@activity.defn(name="priority_probe")
def probe(name: str) -> str:
    DISPATCHED.append(name)
    return name


@workflow.defn(name="PriorityProbe", sandboxed=False)
class Probe:
    @workflow.run
    async def run(self, queue: str) -> None:
        sends = [
            workflow.start_activity(
                probe,
                name,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=30),
                priority=Priority(priority_key=SEND_PRIORITY[purpose]),
            )
            for name, purpose in [(f"newsletter-{n}", "marketing") for n in range(5)]
            + [("password-reset", "critical")]
        ]
        await asyncio.gather(*sends)


async def test_the_server_dispatches_a_critical_send_before_a_backlog_of_marketing(
    dev_server: WorkflowEnvironment,
) -> None:
    """What the priorities buy, on the real server: the reset is scheduled last, with
    five newsletters queued before it, and a one-slot worker gets it first. (Priority
    orders tasks within a partition; the dev server runs one per queue, as tidings
    dev does.)"""
    queue = "priority-probe"
    DISPATCHED.clear()
    async with Worker(dev_server.client, task_queue="priority-wf", workflows=[Probe]):
        handle = await dev_server.client.start_workflow(
            Probe.run, queue, id="priority-probe", task_queue="priority-wf"
        )

        async def all_waiting() -> bool:
            """All six are in the queue's backlog (no worker polls it yet)."""
            try:
                answer = await dev_server.client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=dev_server.client.namespace,
                        task_queue=TaskQueue(name=queue),
                        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                        report_stats=True,
                    )
                )
            except RPCError:  # a busy server may time the stats call out: ask again
                return False
            return answer.stats.approximate_backlog_count == 6

        await eventually(all_waiting)
        with ThreadPoolExecutor(1) as pool:
            async with Worker(
                dev_server.client,
                task_queue=queue,
                activities=[probe],
                activity_executor=pool,
                max_concurrent_activities=1,
            ):
                await handle.result()

    assert DISPATCHED[0] == "password-reset"
    assert sorted(DISPATCHED[1:]) == [f"newsletter-{n}" for n in range(5)]
