"""What the HTTP providers share: one POST, and what its outcome means for a retry.

A send is retried only when it is safe to: a connection that was never made
sent nothing (retry), a request that was written but not answered may have
been acted on (ambiguous, never retried, so nobody gets a message twice).
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from tidings.activities.channels import (
    AmbiguousSendError,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.activities.channels.handover import point_of_no_return

JsonBody = dict[str, object] | list[object]

# The server never had the whole request, so it cannot have acted on it. (A
# write that timed out never finished; a reset while writing, WriteError, may
# come after the last byte, so that one stays ambiguous.)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)
# The request could not even be built: a retry would fail the same way.
_CONFIGURATION = (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)


def post(
    provider: str,
    url: str,
    *,
    timeout_seconds: float,
    data: Mapping[str, str] | None = None,
    json_body: JsonBody | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    delivers: bool = True,
) -> httpx.Response:
    """POST once, on a connection of its own, without following redirects.

    `delivers`: the request carries the message, so its start is the send's point
    of no return (`handover`); False for requests around it (an OAuth token).

    A fresh connection per message keeps the classification honest: a pooled
    connection the server had closed would fail after writing and look
    ambiguous. Redirects are not followed: a signed or authenticated request
    must not wander to another host.
    """
    if delivers:
        point_of_no_return()
    try:
        with httpx.Client(
            timeout=timeout_seconds, follow_redirects=False, verify=_tls_context()
        ) as client:
            return client.post(
                url,
                data=data,
                json=json_body,
                content=content,
                headers=headers,
                auth=httpx.BasicAuth(*auth) if auth else httpx.USE_CLIENT_DEFAULT,
            )
    except _NOT_SENT as err:
        reason = f"{provider}: could not reach {_origin(url)}: {_why(err)}"
        raise TransientSendError(reason) from err
    except _CONFIGURATION as err:
        raise PermanentSendError(f"{provider}: cannot send to {url!r}: {_why(err)}") from err
    except httpx.HTTPError as err:
        # Read timeouts, resets and garbled answers after the request went out.
        raise AmbiguousSendError(
            f"{provider}: {_origin(url)} took the request but gave no answer "
            f"({_why(err)}): the message may have been sent"
        ) from err


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs ~20 ms of CPU, which
    would otherwise be paid by every message (each gets a fresh connection)."""
    return httpx.create_ssl_context()


def classify_response(
    provider: str, response: httpx.Response
) -> TransientSendError | PermanentSendError | None:
    """None for 2xx; 408, 429 and 5xx may pass later; any other answer will not."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    detail = f"{provider}: HTTP {status}: {vendor_message(response)}"
    if status in (408, 429) or status >= 500:
        return TransientSendError(detail, retry_after_seconds=retry_after(response))
    code = f"HTTP {status}"
    if 300 <= status < 400:
        where = response.headers.get("location", "elsewhere")
        return PermanentSendError(
            f"{detail} (redirected to {where}; configure that URL)", code=code
        )
    if status in (401, 403):
        return PermanentSendError(f"{detail} (check the {provider} credentials)", code=code)
    return PermanentSendError(detail, code=code)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds from now: it may be a number or an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def vendor_message(response: httpx.Response) -> str:
    """The vendor's own words for an error, from the usual JSON shapes or the text."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        for key in ("message", "error_description", "error-text", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return text[:300]


def json_object(provider: str, response: httpx.Response) -> dict[str, object]:
    """A 2xx answer's JSON object; anything else means the message's fate is unknown."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AmbiguousSendError(
            f"{provider}: HTTP {response.status_code} with a body that is not a JSON "
            f"object ({response.text[:100]!r}): the message may have been sent"
        )
    return body


def required_part(provider: str, message: OutgoingMessage, name: str) -> str:
    """A rendered part the provider cannot send without; missing, it is the template's fault."""
    value = message.parts.get(name, "")
    if not value.strip():
        raise PermanentSendError(f"{provider}: the {message.channel} message has no {name!r} part")
    return value


def webhook_destination(
    provider: str, to: str, configured: str, allowed_hosts: Sequence[str]
) -> tuple[str, bool]:
    """The URL to post to, and whether it is the message's own address.

    Chat providers post to the configured webhook unless the message's
    address is itself a webhook URL (one per customer workspace, say); only
    then may a dead webhook be suppressed, as an address of that contact.
    A contact's URL must pass the allow-list first: anyone who can set a
    contact's address could otherwise aim tidings at an internal service.
    """
    if to.startswith(("https://", "http://")):
        if not url_allowed(to, allowed_hosts):
            # No `suppress`: the address is refused by policy, not known to be dead.
            host, setting = _host(to), f"TIDINGS_{provider.upper()}_ALLOWED_HOSTS"
            raise PermanentSendError(
                f"{provider}: refused the contact's webhook URL on {host!r}: contact URLs "
                f"may only go to hosts in {setting} (https, or http to a host listed by "
                f"name); add {host!r} there to allow it"
            )
        return to, True
    if not configured:
        raise PermanentSendError("no webhook URL: the message has none, nor the configuration")
    return configured, False


def url_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether a contact-supplied URL's host is on the list (`*.example.com` for subdomains).

    The host is the one httpx will connect to, so `https://allowed@evil/` is
    judged by `evil`. Plain http passes only for a host listed by name (a local
    stand-in such as 127.0.0.1), never through a wildcard.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    host = parsed.host.lower()
    if not host:
        return False
    patterns = [pattern.lower() for pattern in allowed_hosts]
    if host in patterns:
        return parsed.scheme in ("https", "http")
    wildcard = any(p.startswith("*.") and host.endswith(p[1:]) for p in patterns)
    return wildcard and parsed.scheme == "https"


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host
    except httpx.InvalidURL:
        return url


def _origin(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def _why(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
