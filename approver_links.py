"""Sign-in links for the approvers' web inbox: signed, timed tokens naming one login.

`tidings approvals link USER` prints one, and every approval notice carries
one for its recipient. The token holds nothing but the login; it is signed
with the service's secret key under its own salt, so no other token the
service signs (unsubscribe links, inbox tokens) passes for it, and it
expires: a forwarded or leaked link stops working after `TOKEN_MAX_AGE`.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer

TOKEN_SALT = "approver"
TOKEN_MAX_AGE = timedelta(days=7)
INBOX_PATH = "/approvals"


def approver_token(secret_key: str, login: str) -> str:
    return str(URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT).dumps({"user": login}))


def read_approver_token(
    secret_key: str, token: str, *, max_age: timedelta = TOKEN_MAX_AGE
) -> str | None:
    """The login a token names, or None if it is forged, damaged or expired."""
    serializer = URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT)
    try:
        data = serializer.loads(token, max_age=int(max_age.total_seconds()))
    except (BadSignature, ValueError, TypeError):  # SignatureExpired is a BadSignature
        return None
    user = data.get("user") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None


def approver_link(public_url: str, secret_key: str, login: str, *, gate_id: str = "") -> str:
    """A link that signs `login` in and opens the inbox, or one gate."""
    path = f"{INBOX_PATH}/{quote(gate_id, safe='')}" if gate_id else f"{INBOX_PATH}/login"
    return f"{public_url.rstrip('/')}{path}?token={approver_token(secret_key, login)}"
