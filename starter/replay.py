"""Replaying workflow histories with this code: the check before a deploy.

A journey sleeps for weeks; the code that wakes it is whatever is deployed
then. Replaying the histories of running journeys against the new code shows,
before the deploy, whether any would fail on a nondeterministic change (a
step added, an activity renamed, a timer moved) that was not guarded with
`workflow.patched`. The recorded histories in `tests/histories` are replayed
the same way in CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from tidings import naming
from tidings.errors import TidingsError
from tidings.worker import sandbox_runner
from tidings.workflows.approval import ApprovalGateWorkflow
from tidings.workflows.escalation import EscalationWorkflow
from tidings.workflows.journey import JourneyWorkflow

WORKFLOWS = (JourneyWorkflow, EscalationWorkflow, ApprovalGateWorkflow)
WORKFLOW_TYPES = (naming.JOURNEY_WORKFLOW, naming.ESCALATION_WORKFLOW, naming.APPROVAL_WORKFLOW)


def replayer(data_converter: DataConverter) -> Replayer:
    """A replayer of every tidings workflow, in the worker's sandbox."""
    return Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter,
        workflow_runner=sandbox_runner(),
    )


@dataclass
class ReplayReport:
    replayed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """(workflow id, run id, what went wrong)"""

    @property
    def ok(self) -> bool:
        return not self.failures


def live_query(query: str) -> str:
    """The user's visibility query, narrowed to the workflow types tidings runs."""
    types = " OR ".join(f'WorkflowType="{name}"' for name in WORKFLOW_TYPES)
    return f"({types}) AND ({query})" if query.strip() else f"({types})"


async def replay_live(client: Client, query: str, limit: int) -> ReplayReport:
    """Fetch up to `limit` histories matching `query` and replay each with this code."""
    if limit < 1:
        raise TidingsError(f"--limit is {limit}; give how many histories to replay (1 or more)")
    histories = client.list_workflows(live_query(query), limit=limit).map_histories()
    report = ReplayReport()
    try:
        async with replayer(client.data_converter).workflow_replay_iterator(histories) as results:
            async for result in results:
                report.replayed += 1
                if result.replay_failure is not None:
                    report.failures.append(_failure(result.history, result.replay_failure))
    except RPCError as err:
        raise TidingsError(
            f"the server refused the query {query!r}: {err.message}. Check its syntax and "
            'that the search attributes exist (e.g. Journey="onboarding")'
        ) from err
    return report


def _failure(history: WorkflowHistory, error: Exception) -> tuple[str, str, str]:
    started = history.events[0].workflow_execution_started_event_attributes
    return (
        history.workflow_id,
        started.original_execution_run_id,
        f"{type(error).__name__}: {error}",
    )
