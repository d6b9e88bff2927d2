"""Channel providers: one module per provider, behind one protocol per channel."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


class OutgoingEmail(BaseModel):
    """A rendered email, ready for any email provider."""

    sender: str
    to: str
    subject: str
    text: str
    html: str | None = None
    message_id: str
    headers: dict[str, str] = {}


class TransientSendError(Exception):
    """The provider did not take the message but may later: retry."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PermanentSendError(Exception):
    """The provider refused the message for good: do not retry."""


class AmbiguousSendError(Exception):
    """The connection failed after the message was handed over: it may have been sent."""


class EmailProvider(Protocol):
    name: str

    def send(self, email: OutgoingEmail) -> str:
        """Hand the email over; return the provider's message id.

        Raises TransientSendError, PermanentSendError or AmbiguousSendError.
        """
        ...
