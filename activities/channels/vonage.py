"""SMS through Vonage's (Nexmo's) SMS API.

Vonage answers HTTP 200 even for a refused message: each message part
carries a `status`, "0" for accepted, and the number says why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
)

TRANSIENT_STATUSES: dict[str, str] = {
    "1": "throttled: sending faster than the account's limit",
    "5": "internal error",
    "9": "the account is out of credit; top it up and the retries go through",
    "10": "too many connections for the account",
}
INVALID_NUMBER_STATUSES: dict[str, str] = {
    "6": "the number is not one Vonage can route (an unrecognized prefix)",
    "7": "the number is barred from receiving messages",
    "33": "the number has been de-activated",
}
_CREDENTIALS = "check TIDINGS_VONAGE_API_KEY and TIDINGS_VONAGE_API_SECRET"
PERMANENT_STATUSES: dict[str, str] = {
    "2": "a required parameter is missing",
    "3": "a parameter is invalid",
    "4": f"invalid credentials: {_CREDENTIALS}",
    "8": "the Vonage account is suspended; contact Vonage support",
    "11": "the account is not enabled for the HTTP SMS API; ask Vonage to enable it",
    "12": "the message is too long",
    "14": f"invalid signature: {_CREDENTIALS}, or turn off signed requests",
    "15": "invalid sender address: check TIDINGS_VONAGE_FROM",
    "22": "invalid network code",
    "23": "invalid callback URL: check the status callback URL",
    "29": "a trial account can only send to its whitelisted test numbers",
    "32": f"this account requires signed requests: {_CREDENTIALS}",
}
_NOT_DIGIT = re.compile(r"\D")


@dataclass(frozen=True)
class VonageConfig:
    api_key: str
    api_secret: str
    from_name: str
    """An alphanumeric sender id (where the country allows it) or a virtual number."""
    base_url: str = "https://rest.nexmo.com"
    timeout_seconds: float = 10.0


class VonageSms:
    name = "vonage"
    marks_handover = True
    channel = "sms"

    def __init__(self, config: VonageConfig) -> None:
        self.config = config

    def send(self, message: OutgoingMessage) -> str:
        config = self.config
        text = required_part(self.name, message, "text")
        form = {
            "api_key": config.api_key,
            "api_secret": config.api_secret,
            "from": config.from_name,
            "to": _NOT_DIGIT.sub("", message.to),  # Vonage wants 447700900000, no "+"
            "text": text,
            "client-ref": message.delivery_id,
            # Without it, text outside the GSM alphabet arrives as question marks.
            "type": "text" if text.isascii() else "unicode",
        }
        if message.status_callback:
            form["callback"] = message.status_callback
        response = post(
            self.name,
            f"{config.base_url.rstrip('/')}/sms/json",
            timeout_seconds=config.timeout_seconds,
            data=form,
        )
        error = classify_response(self.name, response)
        if error is not None:
            raise error
        return _accepted_id(json_object(self.name, response).get("messages"))


def _accepted_id(parts: object) -> str:
    """The first part's id when every part was accepted.

    A long text goes out in parts, one status each. When some went and
    some did not, a retry would send the first ones twice: ambiguous.
    """
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise AmbiguousSendError("vonage: an answer without messages: it may have been sent")
    refused = [p for p in parts if str(p.get("status")) != "0"]
    if refused and len(refused) < len(parts):
        raise AmbiguousSendError(
            f"vonage: {len(parts) - len(refused)} of {len(parts)} parts were accepted, "
            f"then: {_classify(refused[0])}"
        )
    if refused:
        raise _classify(refused[0])
    message_id = parts[0].get("message-id")
    if not isinstance(message_id, str):
        raise AmbiguousSendError("vonage: an accepted message without a message-id")
    return message_id


def _classify(part: dict[str, object]) -> TransientSendError | PermanentSendError:
    status = str(part.get("status"))
    detail = f"vonage status {status}: {part.get('error-text', '')}".rstrip(": ")
    if status in TRANSIENT_STATUSES:
        retry = 1.0 if status == "1" else None
        return TransientSendError(
            f"{detail} ({TRANSIENT_STATUSES[status]})", retry_after_seconds=retry
        )
    if status in INVALID_NUMBER_STATUSES:
        return PermanentSendError(
            f"{detail} ({INVALID_NUMBER_STATUSES[status]})", suppress="invalid_number", code=status
        )
    meaning = PERMANENT_STATUSES.get(status)
    return PermanentSendError(f"{detail} ({meaning})" if meaning else detail, code=status)
