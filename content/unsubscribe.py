"""Unsubscribe links: signed tokens naming the contact, the topic and the template.

A token needs no database row and cannot be forged or changed to another
contact without the secret key; it does not expire, since the law wants an
opt-out link to keep working long after the message was read. It carries
nothing unique to one delivery, so a preview shows the very link that is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "tidings-unsubscribe"


@dataclass(frozen=True)
class UnsubscribeRequest:
    contact_key: str
    topic: str
    """The topic the message was about: the page offers to leave just that."""
    template: str
    """The template the link came in, kept in the ledger as proof."""


def make_token(secret: str, *, contact_key: str, topic: str, template: str) -> str:
    return str(URLSafeSerializer(secret, salt=SALT).dumps([contact_key, topic, template]))


def read_token(secret: str, token: str) -> UnsubscribeRequest | None:
    """The request a token carries, or None if it was not signed with `secret`."""
    try:
        contact_key, topic, template = URLSafeSerializer(secret, salt=SALT).loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    return UnsubscribeRequest(str(contact_key), str(topic), str(template))


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"
