"""The in-app inbox over HTTP, for the contact's own app.

Every route takes `Authorization: Bearer <inbox token>` (see
`tidings.starter.inbox_admin.inbox_token`); the token decides whose inbox it
is, so no route takes a contact key. A missing, forged or expired token gets a
401 whose `detail` says which; a message id that is not in the token's inbox
(unknown, or another contact's) gets a 404, the same either way.

Responses leave out the journey and template names: they are the sender's
internal vocabulary, not something to show the contact.
"""

# No `from __future__ import annotations`: FastAPI reads the routes'
# annotations at run time, and `Contact` is local to `inbox_router`.
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Self

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlmodel import Session

from tidings.db import inbox
from tidings.db.engine import Database
from tidings.models.tables import InboxMessage
from tidings.starter.inbox_admin import TOKEN_MAX_AGE, InboxTokenError, verify_inbox_token


class InboxMessageOut(BaseModel):
    """One message as the contact's app shows it."""

    id: str
    title: str
    body: str
    action: str | None
    """Where the message leads: a URL, an app link, or a path in the app."""
    created_at: datetime
    read_at: datetime | None
    archived_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, message: InboxMessage) -> Self:
        return cls.model_validate(message, from_attributes=True)


class InboxPage(BaseModel):
    messages: list[InboxMessageOut]
    """Newest first; expired messages are never listed."""
    unread: int
    """Unread, unarchived messages: the app's badge."""


class ReadAllResult(BaseModel):
    marked_read: int
    unread: int


class ErrorOut(BaseModel):
    detail: str


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="inbox token",
    description="A token from the app's backend (inbox_token); it names the contact.",
)
_AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "The inbox token is missing, not valid or expired."}
}
_MESSAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    **_AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "No such message in this contact's inbox."},
}


def inbox_router(
    database: Database, secret_key: str, *, token_max_age: timedelta = TOKEN_MAX_AGE
) -> APIRouter:
    """Routes under /inbox; include them into the service's FastAPI app."""
    router = APIRouter(prefix="/inbox", tags=["inbox"])

    def contact(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if credentials is None:
            detail = (
                "the Authorization header is not a bearer token; send "
                "Authorization: Bearer <inbox token>"
                if request.headers.get("authorization")
                else "no inbox token: send Authorization: Bearer <inbox token>"
            )
            raise _unauthorized(detail, invalid=False)
        try:
            return verify_inbox_token(secret_key, credentials.credentials, max_age=token_max_age)
        except InboxTokenError as err:
            raise _unauthorized(str(err), invalid=True) from None

    Contact = Annotated[str, Depends(contact)]

    @router.get("", response_model=InboxPage, responses=_AUTH_RESPONSES)
    async def list_inbox(
        key: Contact,
        response: Response,
        unread_only: bool = False,
        include_archived: bool = False,
        archived_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=inbox.MAX_LIMIT)] = 50,
    ) -> InboxPage:
        """The contact's messages, newest first, and the unread count.

        Archived messages are left out unless `include_archived`; `archived_only`
        lists them alone (an "Archived" tab).
        """

        def read(session: Session) -> InboxPage:
            now = _now()
            found = inbox.list_for(
                session=session,
                contact_key=key,
                now=now,
                include_archived=include_archived,
                archived_only=archived_only,
                unread_only=unread_only,
                limit=limit,
            )
            return InboxPage(
                messages=[InboxMessageOut.of(message) for message in found],
                unread=inbox.unread_count(session=session, contact_key=key, now=now),
            )

        response.headers["Cache-Control"] = "no-store"  # one person's messages
        return await database.run(read)

    @router.post("/read-all", response_model=ReadAllResult, responses=_AUTH_RESPONSES)
    async def read_all(key: Contact) -> ReadAllResult:
        """Mark every unread message read."""

        def write(session: Session) -> ReadAllResult:
            marked = inbox.mark_all_read(session=session, contact_key=key, now=_now())
            return ReadAllResult(
                marked_read=marked,
                unread=inbox.unread_count(session=session, contact_key=key, now=_now()),
            )

        return await database.run(write)

    @router.post("/{message_id}/read", response_model=InboxMessageOut, responses=_MESSAGE_RESPONSES)
    async def read_message(key: Contact, message_id: str) -> InboxMessageOut:
        """Mark one message read (again is fine: the first time is kept)."""

        def write(session: Session) -> InboxMessageOut:
            message = inbox.mark_read(
                session=session, contact_key=key, message_id=message_id, now=_now()
            )
            return InboxMessageOut.of(message)

        return await _or_404(database, write)

    @router.post(
        "/{message_id}/archive", response_model=InboxMessageOut, responses=_MESSAGE_RESPONSES
    )
    async def archive_message(key: Contact, message_id: str) -> InboxMessageOut:
        """Put one message away: it leaves the list and the unread count."""

        def write(session: Session) -> InboxMessageOut:
            message = inbox.archive(
                session=session, contact_key=key, message_id=message_id, now=_now()
            )
            return InboxMessageOut.of(message)

        return await _or_404(database, write)

    @router.post(
        "/{message_id}/unarchive", response_model=InboxMessageOut, responses=_MESSAGE_RESPONSES
    )
    async def unarchive_message(key: Contact, message_id: str) -> InboxMessageOut:
        """Bring an archived message back to the list (again is fine)."""

        def write(session: Session) -> InboxMessageOut:
            message = inbox.unarchive(session=session, contact_key=key, message_id=message_id)
            return InboxMessageOut.of(message)

        return await _or_404(database, write)

    return router


async def _or_404(
    database: Database, work: Callable[[Session], InboxMessageOut]
) -> InboxMessageOut:
    try:
        return await database.run(work)
    except inbox.UnknownInboxMessageError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None


def _unauthorized(detail: str, *, invalid: bool) -> HTTPException:
    # RFC 6750: name the scheme, and say invalid_token when one was sent.
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


def _now() -> datetime:
    return datetime.now(UTC)
