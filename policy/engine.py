"""The decision: may this message go to this contact now, later, or not at all, and why.

`decide` is a pure function of the facts (ledger entries, suppressions,
preferences, blackouts, recent sends, the clock), so the same facts give the
same decision in the workflow's pre-check, in the send activity, in tests
and in `tidings explain`. An active hold covering the message decides before
any other rule (see `policy/holds.py`). The other rules run from the most final
to the most temporary: a reason to skip beats a reason to wait, and among
waits the latest wins (the caller checks again when it ends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import JsonValue

from tidings.models.holds import Hold
from tidings.models.policy import (
    PRIORITY,
    UNDELIVERABLE,
    Blackout,
    Cap,
    ConsentEntry,
    ContactFacts,
    Decision,
    Message,
    PolicyConfig,
    Preference,
    RecentSend,
    SendWindow,
    Suppression,
)
from tidings.models.primitives import format_duration
from tidings.policy.holds import hold_decision
from tidings.policy.jurisdictions import RulePack, matches_region, packs_for
from tidings.policy.windows import is_open, next_open


@dataclass(frozen=True)
class Facts:
    contact: ContactFacts
    message: Message
    now: datetime
    config: PolicyConfig
    consents: tuple[ConsentEntry, ...] = ()
    suppressions: tuple[Suppression, ...] = ()
    preferences: tuple[Preference, ...] = ()
    blackouts: tuple[Blackout, ...] = ()
    recent: tuple[RecentSend, ...] = ()
    waiting_since: datetime | None = None
    """When this message first had to wait (for the maximum deferral)."""
    holds: tuple[Hold, ...] = ()
    """Active holds and kill switches (all of them: few, and matched here)."""


@dataclass(frozen=True)
class ConsentState:
    basis: str | None
    entry_id: int | None
    expires_at: datetime | None
    revoked_by: int | None
    objected: bool
    """The contact objected to direct marketing at some point (legitimate interest is out)."""
    by_objection: bool = False
    """The entry that revoked it is that objection."""


def decide(facts: Facts) -> Decision:
    packs = packs_for(facts.contact.jurisdiction, facts.config.sector_packs)
    inputs = _inputs(facts, packs)
    held = hold_decision(facts, inputs)
    if held is not None:
        return held
    for check in (_suppression, _consent, _preference):
        skip = check(facts, packs, inputs)
        if skip is not None:
            return skip
    waits = [
        decision
        for decision in (
            _blackout(facts, inputs),
            _window(facts, packs, inputs),
            *_caps(facts, packs, inputs),
            *_intervals(facts, inputs),
        )
        if decision is not None
    ]
    skips = [d for d in waits if d.action == "skip"]
    skips += [d for d in map(_within_deferral(facts), waits) if d.action == "skip"]
    if skips:
        return skips[0]
    if not waits:
        return Decision.send(inputs)
    return max(waits, key=lambda d: d.until or facts.now)


STRENGTH = {
    "express_written": 6,
    "express": 5,
    "contract": 4,
    "implied_purchase": 3,
    "legitimate_interest": 2,
    "implied_inquiry": 1,
}
"""Which grant speaks when several are in force (a later inquiry does not shorten a purchase)."""


def consent_state(
    entries: Iterable[ConsentEntry],
    *,
    channel: str,
    purpose: str,
    topic: str,
    now: datetime,
    packs: list[RulePack],
) -> ConsentState:
    """The ledger read for one message.

    The latest revocation in scope cuts off every grant before it; of the
    grants after it, the strongest still in force decides. A revocation counts
    as soon as it is recorded, whatever clock stamped it; a grant counts from
    its effective time. An objection to direct marketing is absolute: once
    made on any channel or topic, legitimate interest no longer counts.
    """
    entries = list(entries)
    objected = any(e.action == "object" and e.purpose in (None, "marketing") for e in entries)
    scoped = sorted(
        (
            e
            for e in entries
            if e.channel == channel
            and e.purpose in (None, purpose)
            and e.topic in (None, topic)
            and (e.action != "object" or purpose == "marketing")
        ),
        key=lambda e: (e.effective_at, e.id),
    )
    cuts = [i for i, e in enumerate(scoped) if e.action != "grant"]
    revoker = scoped[cuts[-1]] if cuts else None
    grants = [
        e
        for e in scoped[(cuts[-1] + 1 if cuts else 0) :]
        if e.action == "grant" and e.effective_at <= now
    ]
    lasting = [(grant, _expiry(grant, packs)) for grant in grants]
    in_force = [(g, x) for g, x in lasting if x is None or x > now]
    if in_force:
        best, expires = max(
            in_force, key=lambda pair: (STRENGTH.get(pair[0].basis or "", 0), pair[0].effective_at)
        )
        return ConsentState(best.basis, best.id, expires, None, objected)
    if lasting:  # granted, but every grant has lapsed
        return ConsentState(None, None, lasting[-1][1], None, objected)
    if revoker is not None:
        return ConsentState(None, None, None, revoker.id, objected, revoker.action == "object")
    return ConsentState(None, None, None, None, objected)


def _expiry(grant: ConsentEntry, packs: list[RulePack]) -> datetime | None:
    expiries = [grant.expires_at] + [
        p.consent_expiry(grant.basis, grant.effective_at) for p in packs
    ]
    known = [e for e in expiries if e is not None]
    return min(known) if known else None


def _inputs(facts: Facts, packs: list[RulePack]) -> dict[str, JsonValue]:
    local = facts.now.astimezone(ZoneInfo(facts.contact.timezone))
    message = facts.message
    return {
        "jurisdiction": facts.contact.jurisdiction or "unknown",
        "packs": [p.name for p in packs],
        "channel": message.channel,
        "purpose": message.purpose,
        "topic": message.topic,
        "timezone": facts.contact.timezone,
        "local_time": local.strftime("%a %Y-%m-%d %H:%M"),
    }


def _suppression(
    facts: Facts, packs: list[RulePack], inputs: dict[str, JsonValue]
) -> Decision | None:
    message = facts.message
    for entry in facts.suppressions:
        if entry.lifted_at is not None:
            continue
        if entry.channel not in (None, message.channel):
            continue
        on_address = entry.address is not None and entry.address == message.address
        on_contact = entry.address is None
        if not (on_address or on_contact):
            continue
        if message.purpose == "critical" and entry.reason not in UNDELIVERABLE:
            continue
        what = f"address {entry.address}" if on_address else "the contact"
        return Decision(
            kind="suppression",
            action="skip",
            rule=f"suppression: {entry.reason}",
            reason=f"{what} is suppressed on {entry.channel or 'every channel'} "
            f"({entry.reason}{': ' + entry.note if entry.note else ''})",
            inputs={**inputs, "suppression_id": entry.id},
        )
    return None


def _consent(facts: Facts, packs: list[RulePack], inputs: dict[str, JsonValue]) -> Decision | None:
    message = facts.message
    if message.purpose == "critical":
        return None  # legally required notices and security alerts are exempt
    state = consent_state(
        facts.consents,
        channel=message.channel,
        purpose=message.purpose,
        topic=message.topic,
        now=facts.now,
        packs=packs,
    )
    inputs.update(
        consent_basis=state.basis,
        consent_entry=state.entry_id,
        consent_expires=state.expires_at.isoformat() if state.expires_at else None,
    )
    # Transactional and service messages see only revocations of their own
    # purpose or of everything on the channel (an SMS STOP), never a marketing
    # opt-out or an objection to direct marketing.
    if state.revoked_by is not None:
        scope = f"{message.purpose} on {message.topic}"
        return _skip_revoked(packs, inputs, state.revoked_by, scope, objected=state.by_objection)
    if message.purpose != "marketing":
        return None
    for pack in packs:
        rule = pack.consent_rule(message.channel, message.purpose)
        if rule is None:
            continue
        allowed = set(rule.bases)
        if rule.legitimate_interest and not state.objected:
            allowed.add("legitimate_interest")
        if state.basis not in allowed:
            expired = state.expires_at is not None and state.expires_at <= facts.now
            held = (
                f"consent expired {state.expires_at:%Y-%m-%d}"
                if expired
                else (
                    f"the contact's basis is {state.basis}"
                    if state.basis
                    else "there is no consent"
                )
            )
            objection = " (the contact objected to direct marketing)" if state.objected else ""
            return Decision(
                kind="consent",
                action="skip",
                rule=rule.name,
                reason=f"{rule.name}; {held}{objection}",
                inputs=inputs,
            )
    return None


def _skip_revoked(
    packs: list[RulePack],
    inputs: dict[str, JsonValue],
    entry_id: int,
    scope: str,
    *,
    objected: bool = False,
) -> Decision:
    channel = inputs["channel"]
    rule = next(
        (p.revocation for p in packs if p.revocation and channel in p.revocation_channels),
        "an opt-out is honored at once",
    )
    return Decision(
        kind="consent",
        action="skip",
        rule=rule,
        reason=(
            f"the contact objected to direct marketing (ledger entry {entry_id}); {rule}"
            if objected
            else f"the contact revoked consent for {scope} (ledger entry {entry_id}); {rule}"
        ),
        inputs={**inputs, "revoked_by": entry_id},
    )


def _preference(
    facts: Facts, packs: list[RulePack], inputs: dict[str, JsonValue]
) -> Decision | None:
    message = facts.message
    if message.purpose not in ("marketing", "service"):
        return None
    for preference in facts.preferences:
        chosen = (preference.channel, preference.topic) == (message.channel, message.topic)
        if chosen and not preference.subscribed:
            return Decision(
                kind="preferences",
                action="skip",
                rule="preferences",
                reason=f"the contact unsubscribed from {message.topic} on {message.channel}",
                inputs=inputs,
            )
    return None


def _blackout(facts: Facts, inputs: dict[str, JsonValue]) -> Decision | None:
    message = facts.message
    if message.purpose == "critical":
        return None
    # A skip outranks a deferral; among deferrals the earliest end is checked first.
    for blackout in sorted(facts.blackouts, key=lambda b: (b.action != "skip", b.ends_at)):
        if not blackout.starts_at <= facts.now < blackout.ends_at:
            continue
        if blackout.purposes and message.purpose not in blackout.purposes:
            continue
        if not matches_region(facts.contact.jurisdiction, blackout.regions):
            continue
        rule = f"blackout: {blackout.name}"
        if blackout.action == "skip":
            return Decision(
                action="skip",
                kind="blackout",
                rule=rule,
                reason=f"{blackout.name} is on",
                inputs=inputs,
            )
        return Decision(
            kind="blackout",
            action="wait",
            rule=rule,
            until=blackout.ends_at,
            reason=f"waiting for blackout {blackout.name!r} to end at "
            f"{_local(blackout.ends_at, facts.contact.timezone)}",
            inputs=inputs,
        )
    return None


def _window(facts: Facts, packs: list[RulePack], inputs: dict[str, JsonValue]) -> Decision | None:
    message = facts.message
    named: list[tuple[str, SendWindow]] = []
    if message.purpose not in facts.config.bypass_quiet_hours:
        named += [
            (rule.name, rule.window)
            for pack in packs
            for rule in pack.windows
            if message.channel in rule.channels and message.purpose in rule.purposes
        ]
    named += [("the journey's send window", window) for window in message.windows]
    tz = facts.contact.timezone
    closed = [(name, w) for name, w in named if not is_open(w, facts.now, tz)]
    if not closed:
        return None
    until = next_open([w for _, w in named], facts.now, tz)
    names = " and ".join(sorted({name for name, _ in closed}))
    windows = ", ".join(sorted({w.label() for _, w in closed}))
    return Decision(
        kind="window",
        action="wait",
        rule=f"send window: {names}",
        until=until,
        reason=f"waiting for quiet hours to end at {_local(until, tz)} ({names}: {windows})",
        inputs={**inputs, "windows": windows},
    )


def _caps(facts: Facts, packs: list[RulePack], inputs: dict[str, JsonValue]) -> list[Decision]:
    message = facts.message
    caps: list[Cap] = [*facts.config.caps, *(cap for pack in packs for cap in pack.caps)]
    decisions = []
    for cap in caps:
        if message.purpose not in cap.purposes or not cap.covers(message.channel):
            continue
        floor = PRIORITY[message.purpose]
        times = sorted(
            sent.at
            for sent in facts.recent
            if sent.purpose in cap.purposes
            and PRIORITY[sent.purpose] >= floor
            and cap.covers(sent.channel)
            and (not cap.per_topic or sent.topic == message.topic)
            # No upper bound: a send claimed by a concurrent attempt whose clock
            # ran a little ahead of ours still takes its place.
            and sent.at > facts.now - cap.per
        )
        if len(times) < cap.max:
            continue
        if cap.max == 0:
            decisions.append(
                Decision(
                    kind="cap",
                    action="skip",
                    rule=f"frequency cap: {cap.name}",
                    reason=f"{cap.name} allows no such message",
                    inputs=inputs,
                )
            )
            continue
        room_at = times[len(times) - cap.max] + cap.per
        decisions.append(
            Decision(
                kind="cap",
                action="wait",
                rule=f"frequency cap: {cap.name}",
                until=room_at,
                reason=f"waiting for room under {cap.name} ({len(times)} of {cap.max} in "
                f"{format_duration(cap.per)}) until {_local(room_at, facts.contact.timezone)}",
                inputs={**inputs, "cap_count": len(times), "cap_max": cap.max},
            )
        )
    return decisions


def _intervals(facts: Facts, inputs: dict[str, JsonValue]) -> list[Decision]:
    message = facts.message
    decisions = []
    for interval in facts.config.min_intervals:
        if message.channel != interval.before or message.purpose not in interval.purposes:
            continue
        floor = PRIORITY[message.purpose]
        last = max(
            (
                sent.at
                for sent in facts.recent
                if sent.channel == interval.after and PRIORITY[sent.purpose] >= floor
            ),
            default=None,
        )
        if last is None or facts.now - last >= interval.gap:
            continue
        until = last + interval.gap
        decisions.append(
            Decision(
                kind="interval",
                action="wait",
                rule=f"minimum interval: {interval.name}",
                until=until,
                reason=f"no {interval.before} within {format_duration(interval.gap)} of an "
                f"{interval.after}; waiting until {_local(until, facts.contact.timezone)}",
                inputs=inputs,
            )
        )
    return decisions


def _within_deferral(facts: Facts) -> Callable[[Decision], Decision]:
    """A message waits for room (a cap, an interval, a blackout) up to its purpose's
    maximum deferral, then it is skipped; it always waits out quiet hours."""

    def check(wait: Decision) -> Decision:
        limit = facts.config.max_deferral.get(facts.message.purpose, timedelta(0))
        since = facts.waiting_since or facts.now
        if wait.action != "wait" or wait.kind == "window" or wait.until is None:
            return wait
        if wait.until - since <= limit:
            return wait
        return _too_long(facts, wait, limit)

    return check


def _too_long(facts: Facts, wait: Decision, limit: timedelta) -> Decision:
    assert wait.until is not None
    return Decision(
        kind="deferral",
        action="skip",
        rule=f"maximum deferral ({wait.rule})",
        reason=f"would wait until {_local(wait.until, facts.contact.timezone)}, beyond the "
        f"{format_duration(limit)} a {facts.message.purpose} message may wait; {wait.reason}",
        until=wait.until,
        inputs=wait.inputs,
    )


def _local(moment: datetime, tz: str) -> str:
    local = moment.astimezone(ZoneInfo(tz))
    return f"{local:%H:%M} {tz} on {local:%a %Y-%m-%d}"
