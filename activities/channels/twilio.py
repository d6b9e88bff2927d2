"""SMS through Twilio's Messages API, and the X-Twilio-Signature check for its callbacks.

Twilio answers a refused message with a JSON error whose `code` says why;
those codes, not the HTTP status alone, tell a dead number (suppress it)
from an account setting to fix (fail, but keep the number).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.http import (
    classify_response,
    json_object,
    post,
    required_part,
    retry_after,
    vendor_message,
)

INVALID_NUMBER_CODES = frozenset({21211, 21217, 21401, 21407, 21614})
"""Not a valid number, or not one that can take SMS (a landline): it will not change."""
UNSUBSCRIBED = 21610
"""The recipient replied STOP to this sender."""
RATE_LIMITED = 20429

_FIXES: dict[int, str] = {
    20003: "Twilio refused the credentials: check TIDINGS_TWILIO_ACCOUNT_SID and "
    "TIDINGS_TWILIO_AUTH_TOKEN",
    21212: "the From number is not valid: check TIDINGS_TWILIO_FROM",
    21606: "the From number cannot send SMS: check TIDINGS_TWILIO_FROM",
    21659: "the From number is not this account's: check TIDINGS_TWILIO_FROM",
    21408: "SMS to this country is not enabled: turn it on under the account's "
    "Messaging Geographic Permissions",
    21608: "a trial account can only send to verified numbers: verify it or upgrade",
}


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    from_number: str
    """An E.164 number, or a Messaging Service SID (MG...) to let Twilio pick one."""
    base_url: str = "https://api.twilio.com"
    timeout_seconds: float = 10.0


class TwilioSms:
    name = "twilio"
    marks_handover = True
    channel = "sms"

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config

    def send(self, message: OutgoingMessage) -> str:
        config = self.config
        sender = "MessagingServiceSid" if config.from_number.startswith("MG") else "From"
        text = required_part(self.name, message, "text")
        form = {"To": message.to, sender: config.from_number, "Body": text}
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        base = config.base_url.rstrip("/")
        url = f"{base}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        response = post(
            self.name,
            url,
            timeout_seconds=config.timeout_seconds,
            data=form,
            auth=(config.account_sid, config.auth_token),
        )
        if not response.is_success:
            raise _classify(response)
        sid = json_object(self.name, response).get("sid")
        if not isinstance(sid, str):
            raise AmbiguousSendError(f"twilio: HTTP {response.status_code} without a message sid")
        return sid


def _classify(response: httpx.Response) -> TransientSendError | PermanentSendError:
    """Twilio's error code first; the HTTP status for anything it does not name."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    detail = f"twilio {code}: {vendor_message(response)}"
    vendor_code = str(code) if code is not None else f"HTTP {response.status_code}"
    if code in INVALID_NUMBER_CODES:
        return PermanentSendError(detail, suppress="invalid_number", code=vendor_code)
    if code == UNSUBSCRIBED:
        return PermanentSendError(
            f"{detail} (the recipient replied STOP to this sender; Twilio delivers nothing "
            "to them until they reply START)",
            code=vendor_code,
        )
    if code == RATE_LIMITED:
        return TransientSendError(detail, retry_after_seconds=retry_after(response))
    if isinstance(code, int) and code in _FIXES:
        return PermanentSendError(f"{detail} ({_FIXES[code]})", code=vendor_code)
    error = classify_response("twilio", response)
    assert error is not None, "only called for unsuccessful answers"
    if isinstance(error, PermanentSendError):
        error.code = vendor_code
    return error


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """X-Twilio-Signature: HMAC-SHA1 over the full URL, then each POST parameter's
    name and value (sorted by name, then value; no separators), in base64."""
    pairs = params.items() if isinstance(params, Mapping) else params
    signed = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    signature: str,
) -> bool:
    """Whether a callback came from Twilio: `url` exactly as Twilio called it."""
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())
