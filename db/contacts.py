"""Contacts and their identities."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from tidings.errors import InputError, UnknownContactError
from tidings.models.contact import ContactSnapshot, ContactView, IdentifyContact
from tidings.models.tables import Contact, ContactIdentity


def upsert_contact(*, session: Session, data: IdentifyContact, now: datetime) -> ContactView:
    """Create the contact or merge into it; identities owned by another contact are refused."""
    contact = session.get(Contact, data.key)
    created = contact is None
    if contact is None:
        contact = Contact(key=data.key, created_at=now, updated_at=now, traits={})
        session.add(contact)
        session.flush()
    wanted = (
        [("email", e) for e in data.emails]
        + [("phone", p) for p in data.phones]
        + [("push", t) for t in data.push_tokens]
    )
    for kind, value in wanted:
        owner = session.exec(
            select(ContactIdentity).where(
                ContactIdentity.kind == kind, ContactIdentity.value == value
            )
        ).first()
        if owner is None:
            session.add(
                ContactIdentity(contact_key=data.key, kind=kind, value=value, created_at=now)
            )
        elif owner.contact_key != data.key:
            raise InputError(
                f"{kind} {value} already belongs to contact {owner.contact_key!r}; "
                "one address identifies one contact (merging contacts is not supported yet)"
            )
    if data.timezone is not None:
        contact.timezone = data.timezone
    if data.locale is not None:
        contact.locale = data.locale
    if data.jurisdiction is not None:
        contact.jurisdiction = data.jurisdiction
    if data.traits:
        merged = dict(contact.traits)
        for name, trait in data.traits.items():
            if trait is None:
                merged.pop(name, None)
            else:
                merged[name] = trait
        contact.traits = merged
    contact.updated_at = now
    session.flush()
    return _view(session, contact, created=created)


def get_contact(*, session: Session, key: str) -> ContactView:
    contact = session.get(Contact, key)
    if contact is None:
        raise UnknownContactError(key)
    return _view(session, contact, created=False)


def contact_exists(*, session: Session, key: str) -> bool:
    return session.get(Contact, key) is not None


def snapshot(
    *, session: Session, key: str, traits: Iterable[str], default_timezone: str
) -> ContactSnapshot:
    """Only the named traits, so a step sees no more personal data than it reads."""
    contact = session.get(Contact, key)
    if contact is None:
        raise UnknownContactError(key)
    return ContactSnapshot(
        key=contact.key,
        timezone=contact.timezone or default_timezone,
        locale=contact.locale,
        traits={name: contact.traits[name] for name in traits if name in contact.traits},
    )


def primary_address(*, session: Session, key: str, kind: str) -> str | None:
    """The address a channel delivers to: see `deliverable`."""
    values = session.exec(
        select(ContactIdentity.value)
        .where(ContactIdentity.contact_key == key, ContactIdentity.kind == kind)
        .order_by(col(ContactIdentity.id))
    ).all()
    return deliverable(kind, list(values))


def deliverable(kind: str, values_as_added: list[str]) -> str | None:
    """The first-added email or phone (the one the contact gave first), but the newest
    push token: an app registers a new token on reinstall, and the old one dies."""
    if not values_as_added:
        return None
    return values_as_added[-1] if kind == "push" else values_as_added[0]


def _view(session: Session, contact: Contact, *, created: bool) -> ContactView:
    identities = session.exec(
        select(ContactIdentity)
        .where(ContactIdentity.contact_key == contact.key)
        .order_by(col(ContactIdentity.id))
    ).all()
    return ContactView(
        key=contact.key,
        emails=[i.value for i in identities if i.kind == "email"],
        phones=[i.value for i in identities if i.kind == "phone"],
        push_tokens=[i.value for i in identities if i.kind == "push"],
        timezone=contact.timezone,
        locale=contact.locale,
        jurisdiction=contact.jurisdiction,
        traits=dict(contact.traits),
        created=created,
    )
