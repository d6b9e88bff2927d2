"""The in-app inbox: messages stored in the app database, read by the contact's app.

Every operation names the contact as well as the message: a message id alone
never reaches another contact's inbox, and an id that belongs to someone else
gets the same answer as an id that does not exist (nothing to learn from it).
Everything is checked before anything is written, so a refused call leaves
the session as it found it.

Expired messages are never listed, and `purge_expired` deletes them once
they have been expired for a while (operators run `tidings inbox purge`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tidings.errors import InputError
from tidings.models.tables import InboxMessage

MAX_LIMIT = 500
TITLE_MAX = 200
ACTION_MAX = 2000
DELIVERY_ID_MAX = 64
NAME_MAX = {"journey": 64, "template": 100}
# An app shows `action` as a link or button; these schemes would run code there.
UNSAFE_SCHEMES = ("javascript:", "data:", "vbscript:", "file:")
PURGE_GRACE = timedelta(days=30)
"""How long an expired message is kept: support can still look at a recently expired one."""
PURGE_BATCH = 1000
"""Rows per DELETE: each batch is its own short transaction."""


class UnknownInboxMessageError(InputError):
    """No message with this id in this contact's inbox (it may be someone else's)."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(
            f"there is no inbox message {message_id!r} for this contact; list the inbox "
            "for the ids it holds"
        )


def deliver(
    *,
    session: Session,
    contact_key: str,
    delivery_id: str,
    title: str,
    body: str,
    action: str | None,
    journey: str,
    template: str,
    now: datetime,
    expires_at: datetime | None,
) -> InboxMessage:
    """Put a message in the contact's inbox once, whatever the number of attempts.

    A second call with the same delivery id returns the row the first wrote
    (a retried send activity must not show the message twice); it is refused
    if that row belongs to another contact, which only a bug can cause.
    """
    action = action or None
    _check_new(contact_key, delivery_id, title, action, journey, template, now, expires_at)
    existing = _by_delivery(session, delivery_id)
    if existing is None:
        message = InboxMessage(
            id=uuid.uuid4().hex,
            contact_key=contact_key,
            delivery_id=delivery_id,
            title=title,
            body=body,
            action=action,
            journey=journey,
            template=template,
            created_at=now,
            expires_at=expires_at,
        )
        try:
            # A savepoint: losing the race to a concurrent attempt must not
            # roll back the rest of the caller's transaction.
            with session.begin_nested():
                session.add(message)
            return message
        except IntegrityError:
            existing = _by_delivery(session, delivery_id)
            if existing is None:
                raise
    if existing.contact_key != contact_key:
        raise InputError(
            f"delivery {delivery_id!r} is already in another contact's inbox; "
            "a delivery id belongs to one message"
        )
    return existing


def list_for(
    *,
    session: Session,
    contact_key: str,
    now: datetime,
    include_archived: bool = False,
    archived_only: bool = False,
    unread_only: bool = False,
    limit: int = 50,
) -> list[InboxMessage]:
    """The contact's messages, newest first; expired ones are never listed.

    By default archived messages are left out; `include_archived` adds them,
    and `archived_only` lists nothing else (an app's "Archived" tab, from which
    a message can be unarchived).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit {limit}: choose between 1 and {MAX_LIMIT}")
    conditions = [col(InboxMessage.contact_key) == contact_key, _live(now)]
    if archived_only:
        conditions.append(col(InboxMessage.archived_at).is_not(None))
    elif not include_archived:
        conditions.append(col(InboxMessage.archived_at).is_(None))
    if unread_only:
        conditions.append(col(InboxMessage.read_at).is_(None))
    query = (
        select(InboxMessage)
        .where(*conditions)
        # The id breaks ties so that pages of equal times come back in one order.
        .order_by(col(InboxMessage.created_at).desc(), col(InboxMessage.id).desc())
        .limit(limit)
    )
    return list(session.exec(query).all())


def unread_count(*, session: Session, contact_key: str, now: datetime) -> int:
    """What the app's badge shows: unread, unarchived, unexpired messages.

    Archived messages do not count: the contact put them away, and a badge
    they cannot clear from the inbox would never go out.
    """
    query = select(func.count()).select_from(InboxMessage).where(_unread(contact_key, now))
    return int(session.exec(query).one())


def mark_read(
    *, session: Session, contact_key: str, message_id: str, now: datetime
) -> InboxMessage:
    """Mark one message read; reading it again keeps the first time."""
    message = _owned(session, contact_key, message_id)
    if message.read_at is None:
        message.read_at = now
        session.add(message)
    return message


def mark_all_read(*, session: Session, contact_key: str, now: datetime) -> int:
    """Mark every message the unread count counts as read; returns how many changed.

    The same condition as `unread_count`, so the number returned is the badge
    that was cleared.
    """
    result = session.execute(
        update(InboxMessage).where(_unread(contact_key, now)).values(read_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def archive(*, session: Session, contact_key: str, message_id: str, now: datetime) -> InboxMessage:
    """Put a message away: it leaves the inbox list and the unread count."""
    message = _owned(session, contact_key, message_id)
    if message.archived_at is None:
        message.archived_at = now
        session.add(message)
    return message


def unarchive(*, session: Session, contact_key: str, message_id: str) -> InboxMessage:
    """Bring an archived message back to the inbox; one that is not archived is left as is.

    It counts as unread again if it was never read.
    """
    message = _owned(session, contact_key, message_id)
    if message.archived_at is not None:
        message.archived_at = None
        session.add(message)
    return message


def purge_expired(
    *,
    session: Session,
    now: datetime,
    older_than: timedelta = PURGE_GRACE,
    batch_size: int = PURGE_BATCH,
) -> int:
    """Delete every message expired for longer than `older_than`; returns how many.

    Messages without an expiry are kept, and so are messages expired less than
    `older_than` ago, which support may still look at. The rows go in batches
    of `batch_size`, and the session is committed after each one: a large purge
    never holds its locks for long, and one that stops half-way keeps what it
    deleted (run it again to go on). So give it a session of its own.
    """
    if older_than < timedelta(0):
        raise InputError(
            f"older_than {older_than}: a grace period cannot be negative; use 0 to "
            "delete every expired message"
        )
    if batch_size < 1:
        raise InputError(f"batch_size {batch_size}: delete at least 1 row per batch")
    cutoff = now - older_than
    expired = select(InboxMessage.id).where(col(InboxMessage.expires_at) < cutoff).limit(batch_size)
    statement = (
        delete(InboxMessage)
        .where(col(InboxMessage.id).in_(expired))
        # Nothing in this session holds the deleted rows: no need to look for them.
        .execution_options(synchronize_session=False)
    )
    purged = 0
    while True:
        deleted = int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
        session.commit()
        purged += deleted
        if deleted < batch_size:
            return purged


def _owned(session: Session, contact_key: str, message_id: str) -> InboxMessage:
    message = session.get(InboxMessage, message_id) if len(message_id) <= 32 else None
    if message is None or message.contact_key != contact_key:
        raise UnknownInboxMessageError(message_id)
    return message


def _by_delivery(session: Session, delivery_id: str) -> InboxMessage | None:
    query = select(InboxMessage).where(InboxMessage.delivery_id == delivery_id)
    return session.exec(query).first()


def _live(now: datetime) -> ColumnElement[bool]:
    expires = col(InboxMessage.expires_at)
    return or_(expires.is_(None), expires > now)


def _unread(contact_key: str, now: datetime) -> ColumnElement[bool]:
    return and_(
        col(InboxMessage.contact_key) == contact_key,
        col(InboxMessage.read_at).is_(None),
        col(InboxMessage.archived_at).is_(None),
        _live(now),
    )


def _check_new(
    contact_key: str,
    delivery_id: str,
    title: str,
    action: str | None,
    journey: str,
    template: str,
    now: datetime,
    expires_at: datetime | None,
) -> None:
    """Every problem of a new message at once, before anything is written."""
    problems = []
    if not contact_key or len(contact_key) > 128:
        problems.append("contact_key: required, at most 128 characters")
    if not delivery_id or len(delivery_id) > DELIVERY_ID_MAX:
        problems.append(f"delivery_id: required, at most {DELIVERY_ID_MAX} characters")
    if not title.strip():
        problems.append("title: required (the in_app template needs a title part)")
    elif len(title) > TITLE_MAX:
        problems.append(f"title: {len(title)} characters; at most {TITLE_MAX}")
    if action is not None:
        problem = _action_problem(action)
        if problem:
            problems.append(f"action: {problem}")
    for name, value in (("journey", journey), ("template", template)):
        if len(value) > NAME_MAX[name]:
            problems.append(f"{name}: at most {NAME_MAX[name]} characters")
    if expires_at is not None and expires_at <= now:
        problems.append("expires_at: must be later than the time the message is delivered")
    if problems:
        raise InputError("invalid inbox message: " + "; ".join(problems))


def _action_problem(action: str) -> str | None:
    if len(action) > ACTION_MAX:
        return f"{len(action)} characters; at most {ACTION_MAX}"
    if any(c.isspace() for c in action):
        return "a URL has no spaces or line breaks"
    lowered = action.lower()
    if lowered.startswith(UNSAFE_SCHEMES):
        return "javascript:, data:, vbscript: and file: links are refused (they run in the app)"
    if not (lowered.startswith("/") or "://" in lowered or lowered.startswith("mailto:")):
        return "expected a URL (https://..., an app link such as myapp://...) or a path (/...)"
    return None
