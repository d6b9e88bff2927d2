"""Everything the policy needs to decide about one message, read in one transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from tidings.db import blackouts, consent, deliveries, preferences, suppressions
from tidings.errors import UnknownContactError
from tidings.models.policy import ContactFacts, Message, PolicyConfig, RecentSend
from tidings.models.tables import Contact, ContactIdentity, Delivery
from tidings.policy.engine import Facts
from tidings.policy.jurisdictions import packs_for

ADDRESS_KIND = {"email": "email", "sms": "phone", "voice": "phone"}
"""Which identity a channel delivers to (other channels address devices or apps)."""


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
) -> Facts:
    """`lock=True` holds the contact's row until commit (PostgreSQL; SQLite's write
    transactions are serial anyway), so two sends cannot both take a cap's last place."""
    query = select(Contact).where(Contact.key == contact_key)
    contact = session.exec(query.with_for_update() if lock else query).first()
    if contact is None:
        raise UnknownContactError(contact_key)
    identities = session.exec(
        select(ContactIdentity)
        .where(ContactIdentity.contact_key == contact_key)
        .order_by(col(ContactIdentity.id))
    ).all()
    kind = ADDRESS_KIND.get(message.channel)
    address = next((i.value for i in identities if i.kind == kind), None)
    return Facts(
        contact=ContactFacts(
            key=contact.key,
            jurisdiction=contact.jurisdiction,
            timezone=contact.timezone or default_timezone,
        ),
        message=message.model_copy(update={"address": address}),
        now=now,
        config=config,
        consents=tuple(
            consent.ledger(session=session, contact_key=contact_key, channel=message.channel)
        ),
        suppressions=tuple(
            suppressions.active_for(
                session=session, contact_key=contact_key, addresses=[i.value for i in identities]
            )
        ),
        preferences=tuple(preferences.preferences_for(session=session, contact_key=contact_key)),
        blackouts=tuple(blackouts.blackouts(session=session, active_at=now)),
        recent=tuple(
            recent_sends(session, contact_key, now - horizon(config, contact.jurisdiction))
        ),
        waiting_since=waiting_since,
    )


def horizon(config: PolicyConfig, jurisdiction: str | None) -> timedelta:
    """How far back caps and minimum intervals look."""
    spans = [cap.per for cap in config.caps]
    spans += [cap.per for pack in packs_for(jurisdiction, config.sector_packs) for cap in pack.caps]
    spans += [interval.gap for interval in config.min_intervals]
    return max(spans, default=timedelta(0))


def recent_sends(session: Session, contact_key: str, since: datetime) -> list[RecentSend]:
    rows = session.exec(
        select(Delivery.channel, Delivery.purpose, Delivery.topic, Delivery.counted_at).where(
            Delivery.contact_key == contact_key,
            col(Delivery.counted_at) > since,
            col(Delivery.status).in_(deliveries.COUNTED),
        )
    ).all()
    return [
        RecentSend.model_validate(
            {"channel": channel, "purpose": purpose, "topic": topic, "at": at}
        )
        for channel, purpose, topic, at in rows
        if at is not None
    ]
