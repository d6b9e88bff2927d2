"""Contacts as backends describe them (`identify`) and as journeys see them."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, JsonValue, StringConstraints

from tidings.models.policy import Jurisdiction
from tidings.models.primitives import ContactKey, Properties

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_NOISE = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise ValueError(f"{value!r} is not an email address")
    return email


def normalize_phone(value: str) -> str:
    phone = _PHONE_NOISE.sub("", value.strip())
    if not _E164.match(phone):
        raise ValueError(
            f"{value!r} is not a phone number in international form; write it like +14155550123"
        )
    return phone


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone; use a name like America/Chicago or Europe/Berlin"
        ) from None
    return value


def check_locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError(f"{value!r} is not a locale; use a BCP 47 tag like en, fr-CA or pt-BR")
    return value


Email = Annotated[str, AfterValidator(normalize_email)]
Phone = Annotated[str, AfterValidator(normalize_phone)]
PushToken = Annotated[str, StringConstraints(min_length=8, max_length=320, pattern=r"^\S+$")]
"""A device's push registration token (FCM), as the app reported it."""
TimeZoneName = Annotated[str, AfterValidator(check_timezone)]
Locale = Annotated[str, AfterValidator(check_locale)]


class IdentifyContact(BaseModel):
    """Create or update a contact. Traits merge into the stored ones; a null trait is removed."""

    model_config = ConfigDict(extra="forbid")

    key: ContactKey
    emails: list[Email] = []
    phones: list[Phone] = []
    push_tokens: list[PushToken] = []
    timezone: TimeZoneName | None = None
    locale: Locale | None = None
    jurisdiction: Jurisdiction | None = None
    traits: Properties = {}


class ContactView(BaseModel):
    """A contact with all its identities, as `identify` returns it."""

    key: str
    emails: list[str]
    phones: list[str]
    push_tokens: list[str] = []
    timezone: str | None
    locale: str | None
    jurisdiction: str | None
    traits: dict[str, JsonValue]
    created: bool


class ContactSnapshot(BaseModel):
    """The part of a contact a journey step needs, loaded in an activity."""

    key: str
    timezone: str
    locale: str | None = None
    traits: dict[str, JsonValue] = {}
