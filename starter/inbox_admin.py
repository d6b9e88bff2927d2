"""The in-app inbox for backends, operators and the contact's app.

`InboxAdmin` reads and changes a contact's inbox over the app database (no
Temporal server needed), for the Python client and `tidings inbox`.

The app itself authenticates with an inbox token: a signed, timed token that
names one contact and nothing else. The app's backend mints one for the
signed-in user (`inbox_token`) and hands it to the app, which sends it as
`Authorization: Bearer <token>` to the HTTP routes (`tidings.starter.inbox_http`).
Unlike unsubscribe links, these tokens expire: one leaked from a device
should not open the inbox for good.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel
from sqlmodel import Session

from tidings.db import inbox
from tidings.db.engine import Database
from tidings.models.tables import InboxMessage

TOKEN_SALT = "tidings-inbox"
"""Its own salt: an unsubscribe token (same secret) is never accepted as an inbox token."""
TOKEN_MAX_AGE = timedelta(days=30)


class InboxEntry(BaseModel):
    """One inbox message as operators see it (the app sees less: no journey or template)."""

    id: str
    title: str
    body: str
    action: str | None
    journey: str
    template: str
    created_at: datetime
    read_at: datetime | None
    archived_at: datetime | None
    expires_at: datetime | None

    @property
    def unread(self) -> bool:
        return self.read_at is None

    @classmethod
    def of(cls, message: InboxMessage) -> InboxEntry:
        return cls.model_validate(message, from_attributes=True)


InboxEntries: TypeAlias = list[InboxEntry]
"""A module-level name: inside `InboxAdmin`, `list` is the method."""


class InboxAdmin:
    """A contact's inbox over the app database; every call is one transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def list(
        self,
        key: str,
        *,
        unread_only: bool = False,
        include_archived: bool = False,
        archived_only: bool = False,
        limit: int = 50,
    ) -> InboxEntries:
        """The contact's messages, newest first; expired ones are left out.

        Archived messages are left out too unless `include_archived`;
        `archived_only` lists the archived ones alone.
        """

        def read(session: Session) -> InboxEntries:
            found = inbox.list_for(
                session=session,
                contact_key=key,
                now=_now(),
                include_archived=include_archived,
                archived_only=archived_only,
                unread_only=unread_only,
                limit=limit,
            )
            return [InboxEntry.of(message) for message in found]

        return await self.database.run(read)

    async def unread_count(self, key: str) -> int:
        return await self.database.run(
            lambda session: inbox.unread_count(session=session, contact_key=key, now=_now())
        )

    async def mark_read(self, key: str, message_id: str) -> InboxEntry:
        """Raises UnknownInboxMessageError if the contact has no such message."""

        def write(session: Session) -> InboxEntry:
            message = inbox.mark_read(
                session=session, contact_key=key, message_id=message_id, now=_now()
            )
            return InboxEntry.of(message)

        return await self.database.run(write)

    async def mark_all_read(self, key: str) -> int:
        """Returns how many messages were unread (what the badge showed)."""
        return await self.database.run(
            lambda session: inbox.mark_all_read(session=session, contact_key=key, now=_now())
        )

    async def archive(self, key: str, message_id: str) -> InboxEntry:
        """Raises UnknownInboxMessageError if the contact has no such message."""

        def write(session: Session) -> InboxEntry:
            message = inbox.archive(
                session=session, contact_key=key, message_id=message_id, now=_now()
            )
            return InboxEntry.of(message)

        return await self.database.run(write)

    async def unarchive(self, key: str, message_id: str) -> InboxEntry:
        """Raises UnknownInboxMessageError if the contact has no such message."""

        def write(session: Session) -> InboxEntry:
            message = inbox.unarchive(session=session, contact_key=key, message_id=message_id)
            return InboxEntry.of(message)

        return await self.database.run(write)

    async def purge_expired(
        self, *, older_than: timedelta = inbox.PURGE_GRACE, batch_size: int = inbox.PURGE_BATCH
    ) -> int:
        """Delete, for every contact, the messages expired for longer than `older_than`.

        Returns how many were deleted; each batch of `batch_size` rows is its own
        transaction (see `tidings.db.inbox.purge_expired`).
        """
        return await self.database.run(
            lambda session: inbox.purge_expired(
                session=session, now=_now(), older_than=older_than, batch_size=batch_size
            )
        )


class InboxTokenError(Exception):
    """An inbox token that cannot be used; the message says why and what to do."""


def inbox_token(secret: str, contact_key: str) -> str:
    """A token for the app of `contact_key`; it carries the key and the time it was made."""
    return str(_serializer(secret).dumps(contact_key))


def verify_inbox_token(secret: str, token: str, *, max_age: timedelta = TOKEN_MAX_AGE) -> str:
    """The contact key a token names; raises InboxTokenError saying what is wrong."""
    try:
        contact_key = _serializer(secret).loads(token, max_age=int(max_age.total_seconds()))
    except SignatureExpired:
        raise InboxTokenError(
            "the inbox token has expired; ask the app's backend for a new one"
        ) from None
    except (BadSignature, ValueError, TypeError):
        raise InboxTokenError(
            "the inbox token is not valid: it was cut short, changed, or signed with "
            "another key; ask the app's backend for a new one"
        ) from None
    if not isinstance(contact_key, str) or not contact_key:
        raise InboxTokenError("the inbox token names no contact; ask for a new one")
    return contact_key


def read_inbox_token(secret: str, token: str, *, max_age: timedelta = TOKEN_MAX_AGE) -> str | None:
    """The contact key a token names, or None if it is forged, changed or expired."""
    try:
        return verify_inbox_token(secret, token, max_age=max_age)
    except InboxTokenError:
        return None


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT)


def _now() -> datetime:
    return datetime.now(UTC)
