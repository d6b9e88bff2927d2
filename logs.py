"""Logging: structlog, JSON for machines or pretty for a terminal.

Log fields carry ids (delivery, journey, step, contact key), never addresses
or traits. Everything goes through one renderer: tidings' structlog loggers,
and the standard-library loggers of temporalio (whose workflow and activity
loggers attach the run's ids) and of the libraries underneath.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import structlog
from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from tidings import naming

_HANDLER_NAME = "tidings"
_TEMPORAL_FIELDS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_type": "activity",
    "activity_id": "activity_id",
    "attempt": "attempt",
}


def _lift_temporal_context(
    _logger: Any, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """temporalio's loggers put the run's ids in one dict (`temporal_workflow`,
    `temporal_activity`); lift the ones that find a run into plain fields."""
    for key in ("temporal_workflow", "temporal_activity"):
        details = event.pop(key, None)
        if isinstance(details, dict):
            for name, field in _TEMPORAL_FIELDS.items():
                if name in details:
                    event.setdefault(field, details[name])
    workflow_id = event.get("workflow_id")
    if isinstance(workflow_id, str) and "contact_key" not in event:
        contact_key = naming.contact_key_of(workflow_id)
        if contact_key:
            event["contact_key"] = contact_key
    return event


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+\d[\d ()-]{6,18}\d")


def _redact(
    _logger: Any, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Mask addresses that reach a log line anyway: a provider's error text quotes
    the recipient ("550 5.1.1 <ada@example.com>: unknown user")."""
    for key, value in event.items():
        if isinstance(value, str) and ("@" in value or "+" in value):
            event[key] = _PHONE.sub("<phone>", _EMAIL.sub("<email>", value))
    return event


def configure_logging(*, pretty: bool, level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, _lift_temporal_context, _redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _lift_temporal_context,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace our own handler if configured before; leave others (a test runner's) be.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Workflow and activity log lines are tidings' own; the rest of temporalio's
    # info lines (worker start and shutdown) are noise at WARNING's root level.
    for name in ("temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(level)
    # The ids travel as fields; temporalio would also append them to the message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


class ActivityLogContext(Interceptor):
    """Binds the running activity's ids to every log line it writes: tidings'
    activities log with structlog, which knows nothing of Temporal."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindActivityContext(next)


class _BindActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        fields: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        contact_key = naming.contact_key_of(info.workflow_id or "")
        if contact_key:
            fields["contact_key"] = contact_key
        # Each activity runs in a task of its own (and a thread's copy of its
        # context), so these fields reach only this activity's lines.
        with structlog.contextvars.bound_contextvars(**fields):
            return await self.next.execute_activity(input)
