"""Names shared by worker, clients and operators: task queues, ids, search attributes.

Nothing here may carry personal data: workflow ids and search attributes are
stored unencrypted and shown to every operator. Contact keys are pseudonymous
by construction (see `models.primitives.ContactKey`).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

JOURNEY_TASK_QUEUE = "tidings-journeys"
EMAIL_TASK_QUEUE = "tidings-email"
"""Sends run on a queue per channel so the server can rate-limit each provider."""
SEND_CHANNELS = ("email", "sms", "push", "chat", "in_app", "webhook")
ADDRESS_KINDS = {"email": "email", "sms": "phone", "voice": "phone", "push": "push"}
"""The contact identity a channel delivers to (its first-added one); other channels
address the contact itself (in-app) or a configured destination (chat, webhook)."""


def send_task_queue(channel: str) -> str:
    """tidings-email, tidings-sms, tidings-push, tidings-chat, tidings-in-app, tidings-webhook."""
    return f"tidings-{channel.replace('_', '-')}"


JOURNEY_WORKFLOW = "Journey"
EVENT_SIGNAL = "event"
RECHECK_SIGNAL = "recheck"
CONTACT_MERGED_SIGNAL = "contact_merged"
DECIDE_UPDATE = "decide"
APPROVAL_WORKFLOW = "ApprovalGate"
STATUS_QUERY = "status"
ESCALATION_WORKFLOW = "Escalation"
ACKNOWLEDGE_UPDATE = "acknowledge"
RESOLVE_SIGNAL = "resolve"

CONTACT_KEY = SearchAttributeKey.for_keyword("ContactKey")
JOURNEY = SearchAttributeKey.for_keyword("Journey")
JOURNEY_VERSION = SearchAttributeKey.for_int("JourneyVersion")
STEP = SearchAttributeKey.for_keyword("Step")
WAITING_FOR = SearchAttributeKey.for_keyword("WaitingFor")

SEARCH_ATTRIBUTES = (CONTACT_KEY, JOURNEY, JOURNEY_VERSION, STEP, WAITING_FOR)


def journey_workflow_id(journey: str, contact_key: str) -> str:
    """One workflow per (journey, contact): a second trigger finds the running one."""
    return f"journey/{journey}/{contact_key}"


def contact_key_of(workflow_id: str) -> str | None:
    """The contact a journey or escalation workflow is about, from its id (log fields)."""
    parts = workflow_id.split("/")
    if parts[0] == "escalation":
        parts = parts[1:]
    if len(parts) >= 3 and parts[0] == "journey":
        return parts[2]
    return None


def escalation_workflow_id(journey_workflow_id: str, entry: int, step_id: str, visit: int) -> str:
    """One escalation per journey entry and step (a step visited again gets `/<visit>`)."""
    base = f"escalation/{journey_workflow_id}/{entry}/{step_id}"
    return base if visit <= 1 else f"{base}/{visit}"


def batch_gate_workflow_id(journey: str, version: int, step_id: str) -> str:
    """One batch gate per journey version and step: no contact in it."""
    return f"approval/{journey}/v{version}/{step_id}"
