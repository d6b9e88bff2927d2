"""Addresses never enter Temporal: not in ids, search attributes, details or payloads."""

from __future__ import annotations

import base64
import json

from support import Stack
from temporalio.client import WorkflowHistory


def decoded_history(history: WorkflowHistory) -> str:
    """The history as JSON with every base64 payload decoded in place."""
    raw = history.to_json()

    def decode(node: object) -> object:
        if isinstance(node, dict):
            return {
                key: _payload(value) if key == "data" else decode(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [decode(item) for item in node]
        return node

    return json.dumps(decode(json.loads(raw)))


def _payload(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True).decode(errors="replace")
        except ValueError:
            return value
    return value


async def test_a_journeys_history_holds_no_email_address_or_phone_number(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(
        contact_key,
        jurisdiction="US",
        emails=["private.person@example.com"],
        phones=["+14155550199"],
        traits={"first_name": "Priv"},
    )
    await stack.client.track(contact_key, "signed_up", {"plan": "pro"})
    await stack.result("onboarding", contact_key)
    handle = stack.handle("onboarding", contact_key)

    text = decoded_history(await handle.fetch_history())
    description = await handle.describe()

    assert '"plan":"pro"' in text.replace('\\"', '"')  # payloads really were decoded
    assert len(stack.outbox("private.person@example.com")) == 3
    for secret in ("private.person", "example.com", "4155550199"):
        assert secret not in text
        assert secret not in str(description.typed_search_attributes)
        assert secret not in handle.id
