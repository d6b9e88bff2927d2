"""Everything the policy needs to decide about one message, in two round trips.

The send-time check runs once per message, in the transaction that claims
the delivery, so its latency is the send path's. One query reads (and, for
the send, locks) the contact with its addresses; one `UNION ALL` reads its
consent lines, its active suppressions, its preferences,
its recent sends, the active blackouts and the active holds (few: every one is
read, and `decide` matches their scopes), each row's values cast to text so
one row shape fits every table on every database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, Table, bindparam, cast, literal, null, or_, union_all
from sqlalchemy.sql import ColumnElement, CompoundSelect, Select
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session, SQLModel, select

from tidings.db import deliveries
from tidings.db.contacts import deliverable
from tidings.errors import UnknownContactError
from tidings.models.holds import Hold
from tidings.models.policy import (
    Blackout,
    ConsentEntry,
    ContactFacts,
    Message,
    PolicyConfig,
    Preference,
    RecentSend,
    Suppression,
)
from tidings.models.tables import UTCDateTime
from tidings.naming import ADDRESS_KINDS
from tidings.policy.engine import Facts
from tidings.policy.jurisdictions import packs_for

_WIDTH = 8
"""Values per row of the union: the widest table's (a blackout) count."""


def load_facts(
    *,
    session: Session,
    contact_key: str,
    message: Message,
    now: datetime,
    config: PolicyConfig,
    default_timezone: str,
    waiting_since: datetime | None = None,
    lock: bool = False,
    idempotency_key: str = "",
) -> Facts:
    """`lock=True` holds the contact's row until commit (PostgreSQL; SQLite's write
    transactions are serial anyway), so two sends cannot both take a cap's last place.
    The delivery with `idempotency_key` (this message's earlier attempt) is not
    counted against the caps: a retry must not wait for itself."""
    query = _CONTACT_LOCKED if lock else _CONTACT
    rows = session.execute(query, {"contact_key": contact_key}).all()
    if not rows:
        raise UnknownContactError(contact_key)
    jurisdiction, timezone = rows[0][0], rows[0][1]
    addresses = [value for _, _, _, value in rows if value is not None]
    kind = ADDRESS_KINDS.get(message.channel)
    address = deliverable(kind, [v for _, _, k, v in rows if k == kind]) if kind else None
    since = now - horizon(config, jurisdiction)
    found: dict[str, list[Any]] = {name: [] for name in _DECODERS}
    parameters = {
        "contact_key": contact_key,
        "exclude": idempotency_key,
        "addresses": addresses,
        "since": since,
        "now": now,
    }
    for row in session.execute(_UNION, parameters):
        found[row[0]].append(_DECODERS[row[0]](row[1:]))
    return Facts(
        contact=ContactFacts(
            key=contact_key, jurisdiction=jurisdiction, timezone=timezone or default_timezone
        ),
        message=message.model_copy(update={"address": address}),
        now=now,
        config=config,
        consents=tuple(sorted(found["consent"], key=lambda e: (e.effective_at, e.id))),
        suppressions=tuple(found["suppression"]),
        preferences=tuple(found["preference"]),
        blackouts=tuple(found["blackout"]),
        recent=tuple(found["sent"]),
        waiting_since=waiting_since,
        holds=tuple(sorted(found["hold"], key=lambda h: h.id)),
    )


def horizon(config: PolicyConfig, jurisdiction: str | None) -> timedelta:
    """How far back caps and minimum intervals look."""
    spans = [cap.per for cap in config.caps]
    spans += [cap.per for pack in packs_for(jurisdiction, config.sector_packs) for cap in pack.caps]
    spans += [interval.gap for interval in config.min_intervals]
    return max(spans, default=timedelta(0))


def _row(kind: str, *values: Any) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = [literal(kind).label("kind")]
    padded = [*values, *([null()] * (_WIDTH - len(values)))]
    columns += [cast(value, String).label(f"v{n}") for n, value in enumerate(padded)]
    return columns


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _union() -> CompoundSelect[Any]:
    """Built once: the statement is large, and rebuilding it per check costs more than
    running it."""
    consent, sup = _table("consent_ledger").c, _table("suppressions").c
    pref, sent, black = _table("preferences").c, _table("deliveries").c, _table("blackouts").c
    hold = _table("holds").c
    key: BindParameter[str] = bindparam("contact_key")
    exclude: BindParameter[str] = bindparam("exclude")
    addresses: BindParameter[list[str]] = bindparam("addresses", expanding=True)
    since: BindParameter[datetime] = bindparam("since", type_=UTCDateTime())
    now: BindParameter[datetime] = bindparam("now", type_=UTCDateTime())
    parts = [
        select(*_row("consent", consent.id, consent.channel, consent.purpose, consent.topic,
                     consent.action, consent.basis, consent.effective_at, consent.expires_at))
        .where(consent.contact_key == key),  # every channel: an objection holds on all
        select(*_row("suppression", sup.id, sup.contact_key, sup.channel, sup.address,
                     sup.reason, sup.note, sup.created_at))
        .where(sup.lifted_at.is_(None), or_(sup.contact_key == key, sup.address.in_(addresses))),
        select(*_row("preference", pref.channel, pref.topic, pref.subscribed))
        .where(pref.contact_key == key),
        select(*_row("sent", sent.channel, sent.purpose, sent.topic, sent.counted_at))
        .where(sent.contact_key == key, sent.counted_at > since,
               sent.status.in_(deliveries.COUNTED), sent.idempotency_key != exclude),
        select(*_row("blackout", black.id, black.name, black.regions, black.purposes,
                     black.starts_at, black.ends_at, black.action))
        .where(black.starts_at <= now, black.ends_at > now),
        select(*_row("hold", hold.id, hold.scope, hold.action, hold.reason, hold.set_by,
                     hold.set_at))
        .where(hold.lifted_at.is_(None)),  # in force once committed, whatever the clocks
    ]  # fmt: skip
    return union_all(*parts)


def _contact() -> Select[Any]:
    people, ids = _table("contacts"), _table("contact_identities")
    return (
        select(people.c.jurisdiction, people.c.timezone, ids.c.kind, ids.c.value)
        .select_from(people.outerjoin(ids))
        .where(people.c.key == bindparam("contact_key"))
        .order_by(ids.c.id)
    )


_UNION = _union()
_CONTACT = _contact()
_CONTACT_LOCKED = _CONTACT.with_for_update(of=_table("contacts"))


def _time(value: str | None) -> datetime | None:
    """A timestamp as either database renders it as text (naive UTC)."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=UTC)


def _consent(v: Sequence[str | None]) -> ConsentEntry:
    return ConsentEntry.model_validate(
        {"id": v[0], "contact_key": "", "channel": v[1], "purpose": v[2], "topic": v[3],
         "action": v[4], "basis": v[5], "source": "", "proof": {},
         "effective_at": _time(v[6]), "expires_at": _time(v[7])}
    )  # fmt: skip


def _suppression(v: Sequence[str | None]) -> Suppression:
    return Suppression.model_validate(
        {"id": v[0], "contact_key": v[1], "channel": v[2], "address": v[3], "reason": v[4],
         "note": v[5] or "", "created_at": _time(v[6])}
    )  # fmt: skip


def _preference(v: Sequence[str | None]) -> Preference:
    subscribed = (v[2] or "").lower() in ("1", "true", "t")
    return Preference.model_validate({"channel": v[0], "topic": v[1], "subscribed": subscribed})


def _sent(v: Sequence[str | None]) -> RecentSend:
    return RecentSend.model_validate(
        {"channel": v[0], "purpose": v[1], "topic": v[2], "at": _time(v[3])}
    )


def _blackout(v: Sequence[str | None]) -> Blackout:
    return Blackout.model_validate(
        {"id": v[0], "name": v[1], "regions": json.loads(v[2] or "[]"),
         "purposes": json.loads(v[3] or "[]"), "starts_at": _time(v[4]),
         "ends_at": _time(v[5]), "action": v[6]}
    )  # fmt: skip


def _hold(v: Sequence[str | None]) -> Hold:
    return Hold.model_validate(
        {"id": v[0], "scope": v[1], "action": v[2], "reason": v[3], "set_by": v[4],
         "set_at": _time(v[5])}
    )  # fmt: skip


_DECODERS = {
    "consent": _consent,
    "suppression": _suppression,
    "preference": _preference,
    "sent": _sent,
    "blackout": _blackout,
    "hold": _hold,
}
