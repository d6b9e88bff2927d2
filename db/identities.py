"""Finding contacts by reference, following merges, and anonymous contacts."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session, col, select

from tidings import naming
from tidings.db.contacts import add_identity, find_identity
from tidings.errors import InputError, UnknownContactError, UnknownReferenceError
from tidings.identities import Identity, is_reference, parse_reference
from tidings.models.primitives import ContactKey
from tidings.models.tables import Contact, ContactIdentity, JourneyRun

ANONYMOUS_KEY_PREFIX = "anon-"
"""Keys generated for anonymous contacts: random, so they say nothing about the id."""
KNOWN_PERSON_KINDS = ("email", "phone", "external")
"""Identities that make an anonymous contact a known person (never merged silently)."""
_KEY = TypeAdapter(ContactKey)


def check_key(key: str) -> str:
    """A valid contact key, or InputError saying what is wrong and how to name it."""
    try:
        return _KEY.validate_python(key)
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        hint = ""
        if "@" in key or key.startswith("+"):
            kind = "email" if "@" in key else "phone"
            hint = f"; to name a contact by its {kind}, write {kind}:{key}"
        raise InputError(f"{reason}{hint}") from None


def resolve(*, session: Session, ref: str, default_region: str | None = None) -> str:
    """The key of the contact a key or `kind:value` reference names; a merged contact's
    key gives the contact it was merged into."""
    if is_reference(ref):
        identity = parse_reference(ref, default_region=default_region)
        owner = find_identity(session=session, identity=identity)
        if owner is None:
            raise UnknownReferenceError(identity.reference())
        key = owner.contact_key
    else:
        key = check_key(ref)
    contact = session.get(Contact, key)
    if contact is None:
        raise UnknownContactError(key)
    # Merges re-point older tombstones at the new survivor: one step always suffices.
    return contact.merged_into or contact.key


def live_key(*, session: Session, key: str) -> str:
    """The contact `key` now stands for: the one it was merged into, if it was merged;
    `key` itself otherwise (also when there is no such contact: the caller says so)."""
    contact = session.get(Contact, key)
    if contact is None or contact.merged_into is None:
        return key
    return contact.merged_into


def live_contact(*, session: Session, key: str) -> Contact:
    """The contact itself, following a tombstone; UnknownContactError if there is none."""
    contact = session.get(Contact, key)
    if contact is not None and contact.merged_into is not None:
        contact = session.get(Contact, contact.merged_into)
    if contact is None:
        raise UnknownContactError(key)
    return contact


def merged_into(*, session: Session, key: str) -> list[str]:
    """The keys of the contacts merged into this one (its tombstones)."""
    return list(
        session.exec(
            select(Contact.key).where(Contact.merged_into == key).order_by(col(Contact.key))
        ).all()
    )


def person_keys(*, session: Session, key: str) -> list[str]:
    """The contact's key and the keys merged into it: whose journeys are its journeys."""
    return [key, *merged_into(session=session, key=key)]


def adopted_journeys(*, session: Session, key: str) -> dict[str, str]:
    """Journey name -> workflow id of the contact's open entries that run under another
    workflow id than its own: started for a contact merged into it. Events for the
    contact go there rather than into a second entry. One query when nothing was merged."""
    keys = person_keys(session=session, key=key)
    if len(keys) == 1:
        return {}
    runs = session.exec(
        select(JourneyRun)
        .where(col(JourneyRun.contact_key).in_(keys), col(JourneyRun.exited_at).is_(None))
        .order_by(col(JourneyRun.entered_at))
    ).all()
    return {
        run.journey: run.workflow_id
        for run in runs
        if run.workflow_id != naming.journey_workflow_id(run.journey, key)
    }


def create_anonymous(*, session: Session, anonymous_id: str, now: datetime) -> str:
    """A bare contact for an anonymous id nobody has yet, under a generated key."""
    identity = Identity("anonymous", anonymous_id)
    key = f"{ANONYMOUS_KEY_PREFIX}{uuid.uuid4().hex}"
    session.add(Contact(key=key, anonymous=True, traits={}, created_at=now, updated_at=now))
    session.flush()
    add_identity(session=session, contact_key=key, identity=identity, now=now)
    return key


def ensure_contact(*, session: Session, key: str, now: datetime) -> str:
    """The live key for `key`, creating a bare contact when there is none."""
    contact = session.get(Contact, check_key(key))
    if contact is None:
        session.add(Contact(key=key, traits={}, created_at=now, updated_at=now))
        session.flush()
        return key
    return contact.merged_into or contact.key


def is_anonymous_only(*, session: Session, key: str) -> bool:
    """Created for an anonymous id and still without an address or an external id: safe
    to merge into whoever later uses that anonymous id (a visitor who signs up), unlike
    a known person who shares a browser."""
    contact = session.get(Contact, key)
    if contact is None or not contact.anonymous:
        return False
    known = session.exec(
        select(ContactIdentity.id).where(
            ContactIdentity.contact_key == key,
            col(ContactIdentity.kind).in_(KNOWN_PERSON_KINDS),
        )
    ).first()
    return known is None
