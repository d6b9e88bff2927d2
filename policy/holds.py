"""Holds in the policy: which active holds cover a message, and what they decide.

Pure functions of the facts, like the rest of the policy. A hold outranks
every other rule, for every purpose (`critical` included): a legal hold stops
everything it covers. A covered message ends its journey if a kill switch
covers it, else waits `HOLD_RECHECK` and is checked again (sooner when the
hold lifts: `tidings hold lift` wakes held journeys with the recheck signal).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import JsonValue

from tidings.models.holds import Hold, parse_scope
from tidings.models.policy import Decision, Message
from tidings.policy.jurisdictions import matches_region

if TYPE_CHECKING:
    from tidings.policy.engine import Facts

HOLD_RECHECK = timedelta(minutes=5)
"""How long a held send waits before it checks again on its own: the longest a
journey stays held after a lift whose wake-up signal did not reach it."""

KILLED = "ended by kill switch"
"""How a kill switch's reason starts (a settled delivery's error says the journey ended)."""


def covers(hold: Hold, message: Message, jurisdiction: str | None) -> bool:
    """Whether `hold` applies to `message` for a contact in `jurisdiction`."""
    kind, name = parse_scope(hold.scope)
    if kind == "all":
        return True
    if kind == "journey":
        return message.journey == name
    if kind == "template":
        return message.template == name
    if kind == "channel":
        return message.channel == name
    if kind == "purpose":
        return message.purpose == name
    return matches_region(jurisdiction, [name])


def covering(holds: Iterable[Hold], message: Message, jurisdiction: str | None) -> list[Hold]:
    """The active holds that cover the message, kill switches first, then oldest first."""
    found = [h for h in holds if h.active and covers(h, message, jurisdiction)]
    return sorted(found, key=lambda h: (h.action != "kill", h.id))


def hold_decision(facts: Facts, inputs: dict[str, JsonValue]) -> Decision | None:
    """End (kill switch) or wait (hold) if an active hold covers the message."""
    found = covering(facts.holds, facts.message, facts.contact.jurisdiction)
    if not found:
        return None
    hold = found[0]
    inputs = {
        **inputs,
        "hold_id": hold.id,
        "hold_scope": hold.scope,
        "hold_action": hold.action,
        "holds": [h.id for h in found],
    }
    if hold.action == "kill":
        return Decision(
            action="end",
            kind="hold",
            rule=f"kill switch {hold.id}: {hold.scope}",
            reason=f"{KILLED} {hold.id} ({hold.scope}): {hold.reason}",
            inputs=inputs,
        )
    until: datetime = facts.now + HOLD_RECHECK
    return Decision(
        action="wait",
        kind="hold",
        rule=f"hold {hold.id}: {hold.scope}",
        until=until,
        reason=f"on hold {hold.id} ({hold.scope}): {hold.reason}; waiting for it to lift "
        f"(next check {until:%H:%M} UTC)",
        inputs=inputs,
    )
