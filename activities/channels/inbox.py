"""The in-app channel's provider: the app database itself (`tidings.db.inbox`).

Sending is writing one row, so there is no network hop to lose a message on:
a send either committed (the message is in the inbox) or it did not, and a
retry with the same delivery id finds the committed row and returns its id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from tidings.activities.channels import OutgoingMessage, PermanentSendError, TransientSendError
from tidings.db import inbox
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.models.tables import Delivery

DEFAULT_TTL = timedelta(days=90)


def _now() -> datetime:
    return datetime.now(UTC)


class InboxProvider:
    """Stores `in_app` messages in the contact's inbox; returns the inbox message id."""

    name = "inbox"
    marks_handover = True
    """It never marks: the inbox keeps one message per delivery, so a repeat is harmless."""
    channel = "in_app"

    def __init__(
        self,
        database: Database,
        default_ttl: timedelta | None = DEFAULT_TTL,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """`default_ttl` is how long a message stays listed; None keeps it for good."""
        if default_ttl is not None and default_ttl <= timedelta(0):
            raise InputError("the in-app inbox's default_ttl must be positive (or None)")
        self.database = database
        self.default_ttl = default_ttl
        self.clock = clock

    def send(self, message: OutgoingMessage) -> str:
        if message.channel != self.channel:
            raise PermanentSendError(
                f"the inbox provider sends in_app messages, not {message.channel!r}"
            )
        now = self.clock()
        expires_at = now + self.default_ttl if self.default_ttl is not None else None
        try:
            with self.database.session() as session:
                # The send activity records the delivery before calling a
                # provider; its row names the journey and the template. A
                # message sent outside a journey (a test, a preview) has none.
                delivery = session.get(Delivery, message.delivery_id)
                stored = inbox.deliver(
                    session=session,
                    contact_key=message.contact_key,
                    delivery_id=message.delivery_id,
                    title=message.parts.get("title", ""),
                    body=message.parts.get("body", ""),
                    action=message.parts.get("action"),
                    journey=delivery.journey if delivery is not None else "",
                    template=delivery.template if delivery is not None else "",
                    now=now,
                    expires_at=expires_at,
                )
                return stored.id
        except InputError as err:
            # The rendered message itself is wrong: sending it again cannot help.
            raise PermanentSendError(str(err)) from err
        except SQLAlchemyError as err:
            # Only the class names: the driver's text may quote the statement's
            # parameters, which hold the message (and so personal data).
            cause = type(getattr(err, "orig", None) or err).__name__
            raise TransientSendError(
                f"the app database did not store the in-app message ({type(err).__name__}: "
                f"{cause}); it is retried"
            ) from err
