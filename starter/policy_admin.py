"""Contact policy operations for backends and operators: consent, suppressions,
preferences, blackouts, inbound SMS keywords, and `explain`.

Everything here works on the app database alone, so `tidings consent ...`
needs no running Temporal server. Every change is validated whole before it
is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, JsonValue, ValidationError
from sqlmodel import Session, col, select

from tidings.db import audit, blackouts, consent, contacts, journey_runs, preferences, suppressions
from tidings.db.engine import Database
from tidings.db.identities import live_contact
from tidings.errors import InputError, input_error
from tidings.models.contact import normalize_email, normalize_phone
from tidings.models.policy import (
    Blackout,
    Channel,
    ConsentChange,
    ConsentEntry,
    Preference,
    Suppression,
)
from tidings.models.tables import ContactIdentity, Delivery
from tidings.policy.jurisdictions import packs_for
from tidings.policy.keywords import Keyword, classify

STOP_REPLY = (
    "You are unsubscribed: no more texts except urgent security or legal notices. "
    "Reply START to resubscribe."
)
START_REPLY = "You are subscribed again. Reply STOP to unsubscribe, HELP for help."


class ConsentScope(BaseModel):
    """Where a contact stands for one channel, purpose and topic, as the ledger says."""

    channel: str
    purpose: str | None
    topic: str | None
    state: Literal["granted", "revoked", "objected", "expired"]
    basis: str | None
    since: datetime
    expires_at: datetime | None
    entry: int


class ConsentReport(BaseModel):
    contact_key: str
    jurisdiction: str | None
    packs: list[str]
    scopes: list[ConsentScope]
    ledger: list[ConsentEntry]
    suppressions: list[Suppression]
    preferences: list[Preference]


class InboundSms(BaseModel):
    keyword: Keyword | None
    contact_key: str | None
    reply: str | None
    """What to text back (the provider sends it), or None."""


class TimelineEntry(BaseModel):
    at: datetime
    journey: str | None
    step: str | None
    what: str


class PolicyAdmin:
    def __init__(self, database: Database, *, sms_help_text: str) -> None:
        self.database = database
        self.sms_help_text = sms_help_text

    async def change_consent(self, change: ConsentChange) -> ConsentEntry:
        """Append a grant, revocation or objection to the contact's ledger."""

        def write(session: Session) -> ConsentEntry:
            # A merged contact's key speaks for the contact it was merged into.
            live = live_contact(session=session, key=change.contact_key)
            return consent.record_change(
                session=session,
                change=change.model_copy(update={"contact_key": live.key}),
                jurisdiction=live.jurisdiction,
                now=_now(),
            )

        return await self.database.run(write)

    async def grant(
        self,
        key: str,
        *,
        channel: Channel,
        basis: str,
        source: str,
        proof: dict[str, JsonValue] | None = None,
        purpose: str | None = "marketing",
        topic: str | None = None,
        effective_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> ConsentEntry:
        return await self.change_consent(
            _change(
                contact_key=key,
                channel=channel,
                purpose=purpose,
                topic=topic,
                action="grant",
                basis=basis,
                source=source,
                proof=proof or {},
                effective_at=effective_at,
                expires_at=expires_at,
            )
        )

    async def revoke(
        self,
        key: str,
        *,
        channel: Channel,
        source: str,
        purpose: str | None = "marketing",
        topic: str | None = None,
        objection: bool = False,
        proof: dict[str, JsonValue] | None = None,
    ) -> ConsentEntry:
        """Revoke consent; `objection=True` records a GDPR objection to direct marketing."""
        return await self.change_consent(
            _change(
                contact_key=key,
                channel=channel,
                purpose=purpose,
                topic=topic,
                action="object" if objection else "revoke",
                source=source,
                proof=proof or {},
            )
        )

    async def report(self, key: str) -> ConsentReport:
        def read(session: Session) -> ConsentReport:
            contact = contacts.get_contact(session=session, key=key)
            entries = consent.ledger(session=session, contact_key=key)
            identities = [*contact.emails, *contact.phones]
            return ConsentReport(
                contact_key=key,
                jurisdiction=contact.jurisdiction,
                packs=[p.name for p in packs_for(contact.jurisdiction)],
                scopes=_scopes(entries, contact.jurisdiction),
                ledger=entries,
                suppressions=suppressions.active_for(
                    session=session, contact_key=key, addresses=identities
                ),
                preferences=preferences.preferences_for(session=session, contact_key=key),
            )

        return await self.database.run(read)

    async def suppress(
        self,
        key: str | None = None,
        *,
        reason: str,
        address: str | None = None,
        channel: Channel | None = None,
        note: str = "",
    ) -> Suppression:
        try:
            if address is not None:
                address = normalize_email(address) if "@" in address else normalize_phone(address)
            Suppression.model_validate(
                {
                    "id": 0,
                    "reason": reason,
                    "note": note,
                    "created_at": _now(),
                    "contact_key": key,
                    "channel": channel,
                    "address": address,
                }
            )
        except ValidationError as err:
            raise input_error("suppression", err) from None
        except ValueError as err:
            raise InputError(f"invalid suppression: {err}") from None

        def write(session: Session) -> Suppression:
            live = live_contact(session=session, key=key).key if key is not None else None
            return suppressions.suppress(
                session=session,
                reason=reason,
                now=_now(),
                contact_key=live,
                channel=channel,
                address=address,
                note=note,
            )

        return await self.database.run(write)

    async def lift_suppression(self, suppression_id: int) -> Suppression:
        return await self.database.run(
            lambda session: suppressions.lift(
                session=session, suppression_id=suppression_id, now=_now()
            )
        )

    async def set_preference(
        self, key: str, *, channel: Channel, topic: str, subscribed: bool
    ) -> Preference:
        try:
            Preference.model_validate(
                {"channel": channel, "topic": topic, "subscribed": subscribed}
            )
            ConsentChange.model_validate(
                {
                    "contact_key": key,
                    "channel": channel,
                    "topic": topic,
                    "action": "revoke",
                    "source": "preferences",
                }
            )
        except ValidationError as err:
            raise input_error("preference", err) from None

        def write(session: Session) -> Preference:
            return preferences.set_preference(
                session=session,
                contact_key=live_contact(session=session, key=key).key,
                channel=channel,
                topic=topic,
                subscribed=subscribed,
                now=_now(),
            )

        return await self.database.run(write)

    async def add_blackout(
        self,
        name: str,
        *,
        starts_at: datetime,
        ends_at: datetime,
        regions: list[str] | None = None,
        purposes: list[str] | None = None,
        action: str = "defer",
    ) -> Blackout:
        try:
            Blackout.model_validate(
                {
                    "id": 0,
                    "name": name,
                    "starts_at": starts_at,
                    "ends_at": ends_at,
                    "regions": regions or [],
                    "purposes": purposes or [],
                    "action": action,
                }
            )
        except ValidationError as err:
            raise input_error("blackout", err) from None
        return await self.database.run(
            lambda session: blackouts.add_blackout(
                session=session,
                name=name,
                starts_at=starts_at,
                ends_at=ends_at,
                regions=[r.upper() for r in regions or []],
                purposes=purposes or [],
                action=action,
                now=_now(),
            )
        )

    async def blackouts(self) -> list[Blackout]:
        return await self.database.run(lambda session: blackouts.blackouts(session=session))

    async def remove_blackout(self, blackout_id: int) -> None:
        await self.database.run(
            lambda session: blackouts.remove_blackout(session=session, blackout_id=blackout_id)
        )

    async def inbound_sms(self, from_number: str, text: str) -> InboundSms:
        """Act on an SMS keyword at once: STOP revokes every SMS purpose, START restores."""
        try:
            number = normalize_phone(from_number)
        except ValueError as err:
            raise InputError(str(err)) from None
        keyword = classify(text)
        if keyword is None:
            return InboundSms(keyword=None, contact_key=None, reply=None)
        proof: dict[str, JsonValue] = {"from": number, "text": text}

        def act(session: Session) -> InboundSms:
            key = session.exec(
                select(ContactIdentity.contact_key).where(
                    ContactIdentity.kind == "phone", ContactIdentity.value == number
                )
            ).first()
            if keyword == "help":
                return InboundSms(keyword=keyword, contact_key=key, reply=self.sms_help_text)
            if key is None:
                if keyword == "stop":  # nobody we know: keep the number itself quiet
                    suppressions.suppress(
                        session=session,
                        reason="manual",
                        now=_now(),
                        channel="sms",
                        address=number,
                        note="STOP from a number no contact has",
                    )
                return InboundSms(keyword=keyword, contact_key=None, reply=_reply(keyword))
            jurisdiction = contacts.get_contact(session=session, key=key).jurisdiction
            for change in _keyword_changes(session, key, keyword, proof):
                consent.record_change(
                    session=session, change=change, jurisdiction=jurisdiction, now=_now()
                )
            return InboundSms(keyword=keyword, contact_key=key, reply=_reply(keyword))

        return await self.database.run(act)

    async def explain(
        self, key: str, *, journey: str | None = None, limit: int = 40
    ) -> list[TimelineEntry]:
        """A contact's journeys, policy decisions, sends and consent changes, in order."""

        def read(session: Session) -> list[TimelineEntry]:
            contacts.get_contact(session=session, key=key)
            entries = [
                *_journey_lines(session, key),
                *_decision_lines(session, key),
                *_delivery_lines(session, key),
                *([] if journey else _consent_lines(session, key)),
            ]
            chosen = [e for e in entries if journey in (None, e.journey)]
            return sorted(chosen, key=lambda e: e.at)[-limit:]

        return await self.database.run(read)


def _journey_lines(session: Session, key: str) -> list[TimelineEntry]:
    lines = []
    for run in journey_runs.runs_for(session=session, contact_key=key):
        what = f"entered (entry {run.entry}, v{run.version})"
        lines.append(TimelineEntry(at=run.entered_at, journey=run.journey, step=None, what=what))
        if run.exited_at is not None:
            what = f"{run.outcome}: {run.reason}"
            lines.append(TimelineEntry(at=run.exited_at, journey=run.journey, step=None, what=what))
    return lines


_SHOWN_ELSEWHERE = frozenset({"journey", "send"})
"""Audit kinds the timeline takes from journey runs and deliveries (with more detail)."""


def _decision_lines(session: Session, key: str) -> list[TimelineEntry]:
    lines = []
    for record in audit.for_contact(session=session, contact_key=key):
        if record.kind in _SHOWN_ELSEWHERE:
            continue
        if record.kind == "content":
            what = f"content {record.rule}: {record.detail}"
        elif record.kind == "approval":
            what = f"approval {record.rule}: {record.action} by {record.detail}"
        elif record.kind == "gate":
            what = f"approval {record.rule}: {record.action}"
        else:
            stage = record.kind.removeprefix("policy:")
            verdict = "allowed" if record.action == "send" else record.action
            what = f"policy ({stage}): {verdict}: {record.detail}"
        lines.append(
            TimelineEntry(at=record.at, journey=record.journey, step=record.step_id, what=what)
        )
    return lines


def _delivery_lines(session: Session, key: str) -> list[TimelineEntry]:
    lines = []
    query = select(Delivery).where(Delivery.contact_key == key)
    for delivery in session.exec(query.order_by(col(Delivery.scheduled_at))):
        detail = f": {delivery.error}" if delivery.error else ""
        version = f" v{delivery.template_version}" if delivery.template_version else ""
        locale = f" [{delivery.locale}]" if delivery.locale else ""
        what = f"{delivery.channel} {delivery.template}{version}{locale} {delivery.status}{detail}"
        at = delivery.counted_at or delivery.scheduled_at
        lines.append(
            TimelineEntry(at=at, journey=delivery.journey, step=delivery.step_id, what=what)
        )
    return lines


def _consent_lines(session: Session, key: str) -> list[TimelineEntry]:
    lines = []
    for line in consent.ledger(session=session, contact_key=key):
        scope = f"{line.channel}/{line.purpose or 'all'}/{line.topic or 'all'}"
        basis = f" ({line.basis})" if line.basis else ""
        what = f"consent {line.action} {scope}{basis} via {line.source}"
        lines.append(TimelineEntry(at=line.effective_at, journey=None, step=None, what=what))
    return lines


def _change(**fields: object) -> ConsentChange:
    try:
        return ConsentChange.model_validate(fields)
    except ValidationError as err:
        raise input_error("consent change", err) from None


def _keyword_changes(
    session: Session, key: str, keyword: Keyword, proof: dict[str, JsonValue]
) -> list[ConsentChange]:
    if keyword == "stop":
        return [
            ConsentChange(
                contact_key=key,
                channel="sms",
                purpose=None,
                action="revoke",
                source="inbound-sms",
                proof=proof,
            )
        ]
    # Texting START is express consent (not written consent: marketing texts stay
    # off where the law wants it written, US TCPA) and lifts the STOP for every
    # purpose; the grants STOP cut off come back after it.
    lift = ConsentChange(
        contact_key=key,
        channel="sms",
        purpose=None,
        action="grant",
        basis="express",
        source="inbound-sms",
        proof=proof,
    )
    restored = consent.last_revoked_grants(session=session, contact_key=key, channel="sms")
    return [lift] + [
        ConsentChange(
            contact_key=key,
            channel="sms",
            purpose=grant.purpose,
            topic=grant.topic,
            action="grant",
            basis=grant.basis,
            source="inbound-sms",
            proof={**proof, "restores_entry": grant.id},
            expires_at=grant.expires_at,
        )
        for grant in restored
        if (grant.purpose, grant.topic) != (None, None)
    ]


def _reply(keyword: Keyword) -> str | None:
    return {"stop": STOP_REPLY, "start": START_REPLY}.get(keyword)


def _scopes(entries: list[ConsentEntry], jurisdiction: str | None) -> list[ConsentScope]:
    """Each scope the ledger mentions, as its latest line leaves it."""
    packs = packs_for(jurisdiction)
    now = _now()
    latest: dict[tuple[str, str | None, str | None], ConsentEntry] = {}
    for entry in sorted(entries, key=lambda e: (e.effective_at, e.id)):
        latest[(entry.channel, entry.purpose, entry.topic)] = entry
    scopes = []
    for (channel, purpose, topic), entry in latest.items():
        expiries = [entry.expires_at] + [
            p.consent_expiry(entry.basis, entry.effective_at) for p in packs
        ]
        known = [e for e in expiries if e is not None]
        expires = min(known) if known and entry.action == "grant" else None
        state: Literal["granted", "revoked", "objected", "expired"]
        if entry.action == "grant":
            state = "expired" if expires is not None and expires <= now else "granted"
        else:
            state = "objected" if entry.action == "object" else "revoked"
        scopes.append(
            ConsentScope(
                channel=channel,
                purpose=purpose,
                topic=topic,
                state=state,
                basis=entry.basis,
                since=entry.effective_at,
                expires_at=expires,
                entry=entry.id,
            )
        )
    return scopes


def _now() -> datetime:
    return datetime.now(UTC)
