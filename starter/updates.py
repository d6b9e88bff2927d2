"""Sending a person's decision to a workflow as an Update, the way approvers and
staff do it: the workflow's validator has the last word, and its refusal comes
back as one sentence."""

from __future__ import annotations

from typing import TypeVar

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")


class UpdateRefused(Exception):
    """The workflow's validator refused; `reason` is its words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkflowClosed(Exception):
    """The workflow has finished: nothing more can be decided there."""


async def run_update(
    client: Client, workflow_id: str, update: str, argument: object, result_type: type[T]
) -> T:
    handle = client.get_workflow_handle(workflow_id)
    try:
        result: T = await handle.execute_update(update, argument, result_type=result_type)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise UpdateRefused(
            cause.message if isinstance(cause, ApplicationError) else str(cause)
        ) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise WorkflowClosed(workflow_id) from None
        raise
    return result
