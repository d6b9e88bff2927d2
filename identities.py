"""Identities: the ways one contact is known, normalised so that one person's address
written two ways is still one identity, and the references (`kind:value`) that name a
contact by one of them.

    email:ada@example.com     phone:+447700900123      device:ios-7f3a
    push:<token>              anonymous:<id>           external:stripe:cus_42
    push:https://<endpoint>#p256dh=<key>&auth=<secret>   (a Web Push subscription)

A reference is told from a contact key by its prefix: keys may not start with an
identity kind and a colon (`models.primitives.ContactKey`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from tidings.errors import InputError
from tidings.models.primitives import REFERENCE_KINDS
from tidings.push_subscriptions import is_web_push, parse_subscription

IDENTITY_KINDS = REFERENCE_KINDS
"""email, phone, device, push, anonymous, external (an id in a source system)."""
ADDRESS_KINDS = ("email", "phone", "push")
"""Identities a channel delivers to; the others only recognise the contact."""
MAX_VALUE = 320
"""The identity column's size (the longest email address)."""

_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_PHONE_EXAMPLE = "+14155550123"


@dataclass(frozen=True)
class Identity:
    """One normalised identity; `source` names the system of an external id, else ""."""

    kind: str
    value: str
    source: str = ""

    def reference(self) -> str:
        """The `kind:value` reference that names it (`external:source:id`)."""
        if self.kind == "external":
            return f"external:{self.source}:{self.value}"
        return f"{self.kind}:{self.value}"


def normalize_email(value: str) -> str:
    """Checked by email-validator's syntax rules (no DNS lookup) and lower-cased whole:
    mail systems treat the local part as case-insensitive in practice, and one person's
    address typed twice must match."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as err:
        raise ValueError(f"{value!r} is not an email address: {err}") from None
    email = checked.normalized.lower()
    if len(email) > MAX_VALUE:
        raise ValueError(f"{value[:40]!r}... is not an email address: over {MAX_VALUE} characters")
    return email


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 (`+447700900123`). A number without `+` is read in `default_region`
    (TIDINGS_DEFAULT_PHONE_REGION) and refused without one.

    Numbers are checked to be *possible* (right length for the country), not assigned:
    test and fictional ranges (555-01xx) must still be usable."""
    text = value.strip()
    if not text.startswith("+") and not default_region:
        raise ValueError(
            f"{value!r} is not a phone number in international form; write it like "
            f"{_PHONE_EXAMPLE}, or set TIDINGS_DEFAULT_PHONE_REGION (e.g. GB) to read "
            "numbers without + as that country's"
        )
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as err:
        raise ValueError(
            f"{value!r} is not a phone number ({err.args[0]}); write it like {_PHONE_EXAMPLE}"
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(
            f"{value!r} is not a possible phone number for its country code "
            f"(+{number.country_code}); write it like {_PHONE_EXAMPLE}"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_phone_region(value: str) -> str:
    """A region phonenumbers knows (ISO 3166 code: GB, US, DE), upper-cased."""
    region = value.strip().upper()
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not a phone region; use a two-letter country code such as GB or US"
        )
    return region


def check_token(value: str, what: str, *, min_length: int = 1) -> str:
    """Device ids, push tokens and anonymous ids: opaque, kept exactly as given."""
    text = value.strip()
    if not min_length <= len(text) <= MAX_VALUE or any(
        c.isspace() or unicodedata.category(c).startswith("C") for c in text
    ):
        raise ValueError(
            f"{value[:40]!r} is not a valid {what}: {min_length}-{MAX_VALUE} characters "
            "without spaces or control characters"
        )
    return text


def check_source(value: str) -> str:
    """The system an external id comes from (stripe, salesforce, zendesk...)."""
    source = value.strip().lower()
    if not _SOURCE.fullmatch(source):
        raise ValueError(
            f"{value[:40]!r} is not a source system name: 1-32 lowercase letters, digits, "
            "_ . - (e.g. stripe, salesforce)"
        )
    return source


def normalize_identity(
    kind: str, value: str, *, source: str = "", default_region: str | None = None
) -> Identity:
    """One identity, normalised; ValueError naming the value when it is not one."""
    if kind == "email":
        return Identity(kind, normalize_email(value))
    if kind == "phone":
        return Identity(kind, normalize_phone(value, default_region))
    if kind == "push":
        if is_web_push(value):  # a browser's subscription, not an FCM token
            return Identity(kind, parse_subscription(value).address)
        return Identity(kind, check_token(value, "push token", min_length=8))
    if kind == "device":
        return Identity(kind, check_token(value, "device id"))
    if kind == "anonymous":
        return Identity(kind, check_token(value, "anonymous id"))
    if kind == "external":
        return Identity(kind, check_token(value, f"{source} id"), check_source(source))
    raise ValueError(f"{kind!r} is not an identity kind; use one of {', '.join(IDENTITY_KINDS)}")


def is_reference(ref: str) -> bool:
    """True for `kind:value`, False for a contact key."""
    kind, colon, _ = ref.partition(":")
    return bool(colon) and kind in IDENTITY_KINDS


def parse_reference(ref: str, *, default_region: str | None = None) -> Identity:
    """The identity a `kind:value` reference names; InputError naming it if malformed."""
    kind, _, rest = ref.partition(":")
    source = ""
    if kind == "external":
        source, colon, rest = rest.partition(":")
        if not colon:
            raise InputError(
                f"{ref!r} names no source system; write external references as "
                "external:SOURCE:ID, e.g. external:stripe:cus_42"
            )
    try:
        return normalize_identity(kind, rest, source=source, default_region=default_region)
    except ValueError as err:
        raise InputError(f"the contact reference {ref!r} is malformed: {err}") from None
