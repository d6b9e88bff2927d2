"""A channel's vendor limit holds under a burst, on the real server and worker limiters."""

from __future__ import annotations

import asyncio
import bisect
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tidings.settings import Settings
from tidings.worker import CHANNEL_THREADS, rate_limits

VENDOR_LIMIT = 10.0
SENDS = 30
STARTED: list[float] = []


@activity.defn(name="rate_probe")
def probe(n: int) -> int:
    # The server's clock: when it handed this attempt to the worker.
    STARTED.append(activity.info().started_time.timestamp())
    return n


@workflow.defn(name="RateProbe", sandboxed=False)
class Burst:
    """Schedules every send at once, as a campaign reaching a channel does."""

    @workflow.run
    async def run(self, queue: str) -> int:
        done = await asyncio.gather(
            *(
                workflow.execute_activity(
                    probe, n, task_queue=queue, start_to_close_timeout=timedelta(seconds=60)
                )
                for n in range(SENDS)
            )
        )
        return len(done)


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered))


async def test_a_burst_never_exceeds_the_vendors_limit_in_any_second(
    dev_server: WorkflowEnvironment,
) -> None:
    settings = Settings(channel_rate_limits={"sms": VENDOR_LIMIT})
    queue = f"rate-probe-{uuid.uuid4().hex[:8]}"
    STARTED.clear()
    with ThreadPoolExecutor(CHANNEL_THREADS) as pool:
        channel_worker = Worker(
            dev_server.client,
            task_queue=queue,
            activities=[probe],
            activity_executor=pool,
            max_concurrent_activities=CHANNEL_THREADS,
            **rate_limits(settings, "sms"),
        )
        async with (
            channel_worker,
            Worker(dev_server.client, task_queue="rate-wf", workflows=[Burst]),
        ):
            sent = await dev_server.client.execute_workflow(
                Burst.run, queue, id=f"rate-burst-{queue}", task_queue="rate-wf"
            )

    assert sent == SENDS == len(STARTED)
    # Slowness can only lower the count: this bounds the rate from above, not below.
    assert busiest_second(STARTED) <= VENDOR_LIMIT * 1.05


def test_sends_are_dispatched_under_the_limit_by_the_configured_margin() -> None:
    settings = Settings(channel_rate_limits={"sms": 30}, channel_rate_margin=0.8)
    assert rate_limits(settings, "sms") == {
        "max_task_queue_activities_per_second": 24.0,
        "max_activities_per_second": 24.0,
    }
    assert rate_limits(settings, "push") == {
        "max_task_queue_activities_per_second": None,
        "max_activities_per_second": None,
    }
