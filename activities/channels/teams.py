"""Chat messages through a Microsoft Teams incoming webhook (Workflows or the older connector).

The message goes as an Adaptive Card attachment, the format both kinds of
webhook take. Workflows answer 202; the older connector answers 200 "1",
and reports some failures as 200 with the error in the text, which is
read here as the error it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx

from tidings.activities.channels import (
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.http import (
    classify_response,
    post,
    required_part,
    webhook_destination,
)

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
_HIDDEN_ERROR = re.compile(r"returned HTTP error (\d{3})")


@dataclass(frozen=True)
class TeamsConfig:
    webhook_url: str
    timeout_seconds: float = 10.0
    allowed_hosts: tuple[str, ...] = ("*.webhook.office.com", "*.logic.azure.com")
    """Where a contact's own webhook URL may point: connectors, and Workflows
    (Power Automate) URLs."""


class TeamsWebhook:
    name = "teams"
    marks_handover = True
    channel = "chat"

    def __init__(self, config: TeamsConfig) -> None:
        self.config = config

    def send(self, message: OutgoingMessage) -> str:
        url, own = webhook_destination(
            self.name, message.to, self.config.webhook_url, self.config.allowed_hosts
        )
        response = post(
            self.name,
            url,
            timeout_seconds=self.config.timeout_seconds,
            json_body=teams_payload(message),
        )
        error = _classify(response)
        if isinstance(error, PermanentSendError) and response.status_code in (404, 410) and own:
            raise PermanentSendError(str(error), suppress="hard_bounce")
        if error is not None:
            raise error
        return message.delivery_id


def teams_payload(message: OutgoingMessage) -> dict[str, object]:
    """`blocks`, when given, is the card (or the whole message); else a card of the text."""
    parts = message.parts
    if parts.get("blocks"):
        try:
            card = json.loads(parts["blocks"])
        except ValueError as err:
            raise PermanentSendError(f"the Teams card is not valid JSON: {err}") from err
        if isinstance(card, dict) and card.get("type") == "message":
            return card
        if not (isinstance(card, dict) and card.get("type") == "AdaptiveCard"):
            raise PermanentSendError(
                'the Teams card must be an object with "type": "AdaptiveCard" (or a whole '
                '"message" with attachments)'
            )
    else:
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": required_part("teams", message, "text"), "wrap": True}
            ],
        }
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


def _classify(response: httpx.Response) -> TransientSendError | PermanentSendError | None:
    error = classify_response("teams", response)
    hidden = _HIDDEN_ERROR.search(response.text) if error is None else None
    if hidden is None:
        return error
    status = int(hidden.group(1))
    detail = f"teams: {response.text.strip()[:300]}"
    if status == 429 or status >= 500:
        return TransientSendError(detail)
    return PermanentSendError(detail)
