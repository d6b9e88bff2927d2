"""The bare baseline of `memory.py`: a worker with one workflow asleep on one timer.

Imports Temporal's SDK and nothing of tidings, so its idle memory is what a
bare Temporal worker costs. `memory.py` runs `serve` in a process of its own.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench-sleep"
READY = "bare worker running"


@workflow.defn(name="BareSleeper")
class BareSleeper:
    """Asleep on one timer: the baseline for a journey whose first step is a long wait."""

    @workflow.run
    async def run(self, seconds: float) -> None:
        await workflow.sleep(timedelta(seconds=seconds))


async def serve(address: str) -> None:
    """BareSleeper on its own queue, with the SDK's defaults, until the process is killed."""
    client = await Client.connect(address)
    async with Worker(client, task_queue=TASK_QUEUE, workflows=[BareSleeper]):
        print(READY, flush=True)
        await asyncio.Event().wait()
