"""Contacts and their identities."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from tidings.errors import InputError, UnknownContactError
from tidings.identities import Identity
from tidings.models.contact import ContactSnapshot, ContactView, IdentifyContact
from tidings.models.tables import Contact, ContactIdentity


def upsert_contact(*, session: Session, data: IdentifyContact, now: datetime) -> ContactView:
    """Create the contact or update it; identities owned by another contact are refused.

    A merged contact's key updates the contact it was merged into."""
    contact = session.get(Contact, data.key)
    if contact is not None and contact.merged_into is not None:
        contact = session.get(Contact, contact.merged_into)
        assert contact is not None, "a tombstone names an existing contact"
    created = contact is None
    if contact is None:
        contact = Contact(key=data.key, created_at=now, updated_at=now, traits={})
        session.add(contact)
        session.flush()
    for identity in wanted_identities(data):
        add_identity(session=session, contact_key=contact.key, identity=identity, now=now)
    if data.timezone is not None:
        contact.timezone = data.timezone
    if data.locale is not None:
        contact.locale = data.locale
    if data.jurisdiction is not None:
        contact.jurisdiction = data.jurisdiction
    if data.traits:
        merged = dict(contact.traits)
        times = dict(contact.trait_times)
        for name, trait in data.traits.items():
            if trait is None:
                merged.pop(name, None)
                times.pop(name, None)
            else:
                merged[name] = trait
                times[name] = now.isoformat()
        contact.traits, contact.trait_times = merged, times
    contact.updated_at = now
    session.flush()
    return _view(session, contact, created=created)


def wanted_identities(data: IdentifyContact) -> list[Identity]:
    """The identities an identify call names, already normalised by its model."""
    return (
        [Identity("email", e) for e in data.emails]
        + [Identity("phone", p) for p in data.phones]
        + [Identity("push", t) for t in data.push_tokens]
        + [Identity("device", d) for d in data.devices]
        + [Identity("anonymous", a) for a in data.anonymous_ids]
        + [Identity("external", i, source) for source, i in data.external_ids.items()]
    )


def add_identity(*, session: Session, contact_key: str, identity: Identity, now: datetime) -> bool:
    """Give the contact an identity (True if new); one owned by another contact, or a
    second id from the same source system, is refused."""
    owner = find_identity(session=session, identity=identity)
    if owner is not None:
        if owner.contact_key == contact_key:
            return False
        raise InputError(
            f"{identity.reference()} already belongs to contact {owner.contact_key!r}; one "
            "identity names one contact. If they are one person, merge them: "
            f"`tidings contacts merge {owner.contact_key} {contact_key} --evidence ...`"
        )
    if identity.kind == "external":
        other = session.exec(
            select(ContactIdentity.value).where(
                ContactIdentity.contact_key == contact_key,
                ContactIdentity.kind == "external",
                ContactIdentity.source == identity.source,
            )
        ).first()
        if other is not None:
            raise InputError(
                f"contact {contact_key!r} already has {identity.source} id {other!r}, so "
                f"{identity.source} id {identity.value!r} cannot be its too: one id per "
                "source system. If the old id is wrong, fix it in the source system"
            )
    session.add(
        ContactIdentity(
            contact_key=contact_key,
            kind=identity.kind,
            source=identity.source,
            value=identity.value,
            created_at=now,
        )
    )
    session.flush()
    return True


def find_identity(*, session: Session, identity: Identity) -> ContactIdentity | None:
    return session.exec(
        select(ContactIdentity).where(
            ContactIdentity.kind == identity.kind,
            ContactIdentity.source == identity.source,
            ContactIdentity.value == identity.value,
        )
    ).first()


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
        devices=[i.value for i in identities if i.kind == "device"],
        anonymous_ids=[i.value for i in identities if i.kind == "anonymous"],
        external_ids={i.source: i.value for i in identities if i.kind == "external"},
        timezone=contact.timezone,
        locale=contact.locale,
        jurisdiction=contact.jurisdiction,
        traits=dict(contact.traits),
        created=created,
    )
