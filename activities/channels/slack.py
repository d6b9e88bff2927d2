"""Chat messages through a Slack incoming webhook.

Slack answers in plain text: `ok`, or an error word (`invalid_blocks`,
`no_text`, `channel_not_found`, `no_service`) with a 4xx status; a 429
carries Retry-After.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tidings.activities.channels import OutgoingMessage, PermanentSendError
from tidings.activities.channels.http import (
    classify_response,
    post,
    vendor_message,
    webhook_destination,
)

GONE = frozenset({"no_service", "channel_not_found", "channel_is_archived", "invalid_token"})
"""The webhook (or its channel or app) was removed: it will not come back."""


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str
    """https://hooks.slack.com/services/T.../B.../...: it names the channel."""
    timeout_seconds: float = 10.0
    allowed_hosts: tuple[str, ...] = ("hooks.slack.com",)
    """Where a contact's own webhook URL may point (`*.` for subdomains)."""


class SlackWebhook:
    name = "slack"
    marks_handover = True
    channel = "chat"

    def __init__(self, config: SlackConfig) -> None:
        self.config = config

    def send(self, message: OutgoingMessage) -> str:
        url, own = webhook_destination(
            self.name, message.to, self.config.webhook_url, self.config.allowed_hosts
        )
        payload: dict[str, object] = {"text": message.parts.get("text", "")}
        if message.parts.get("blocks"):
            # `text` stays: Slack shows it in notifications and where blocks cannot be.
            payload["blocks"] = parse_blocks(message.parts["blocks"])
        response = post(
            self.name, url, timeout_seconds=self.config.timeout_seconds, json_body=payload
        )
        error = classify_response(self.name, response)
        if isinstance(error, PermanentSendError) and vendor_message(response) in GONE:
            raise PermanentSendError(
                f"{error} (the webhook, its channel or its app is gone: create a new one)",
                suppress="hard_bounce" if own else None,
            )
        if error is not None:
            raise error
        # Incoming webhooks give no message id: the delivery id is the reference.
        return message.delivery_id


def parse_blocks(blocks: str) -> list[object]:
    """Block Kit JSON: a list of blocks, or Block Kit Builder's {"blocks": [...]}."""
    try:
        parsed = json.loads(blocks)
    except ValueError as err:
        raise PermanentSendError(f"the chat message's blocks are not valid JSON: {err}") from err
    if isinstance(parsed, dict) and "blocks" in parsed:
        parsed = parsed["blocks"]
    if not isinstance(parsed, list):
        raise PermanentSendError("the chat message's blocks must be a JSON list of blocks")
    return parsed
