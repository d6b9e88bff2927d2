"""Contacts as backends describe them (`identify`) and as journeys see them."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    JsonValue,
    ValidationInfo,
)

from tidings import identities
from tidings.models.policy import Jurisdiction
from tidings.models.primitives import ContactKey, Properties

_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
PHONE_REGION_CONTEXT = "default_phone_region"
"""Validation context key: the region numbers without + are read in (see `phone_context`)."""


def normalize_email(value: str) -> str:
    return identities.normalize_email(value)


def normalize_phone(value: str, default_region: str | None = None) -> str:
    return identities.normalize_phone(value, default_region)


def _phone_in_context(value: str, info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return identities.normalize_phone(value, context.get(PHONE_REGION_CONTEXT) or None)


def phone_context(default_phone_region: str) -> dict[str, str]:
    """Pass as `model_validate(..., context=...)` so numbers without + are accepted."""
    return {PHONE_REGION_CONTEXT: default_phone_region}


def _external_ids(value: dict[str, str]) -> dict[str, str]:
    checked = {}
    for source, external_id in value.items():
        identity = identities.normalize_identity("external", external_id, source=source)
        checked[identity.source] = identity.value
    return checked


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
Phone = Annotated[str, AfterValidator(_phone_in_context)]
PushToken = Annotated[str, AfterValidator(lambda v: identities.normalize_identity("push", v).value)]
"""A device's push registration token (FCM), as the app reported it, or a browser's Web
Push subscription (its JSON or compact form, kept compact: see push_subscriptions)."""
DeviceId = Annotated[str, AfterValidator(lambda v: identities.check_token(v, "device id"))]
AnonymousId = Annotated[str, AfterValidator(lambda v: identities.check_token(v, "anonymous id"))]
"""A visitor's id before they are known (Segment's anonymousId)."""
ExternalIds = Annotated[dict[str, str], AfterValidator(_external_ids)]
"""Ids in source systems, by system: {"stripe": "cus_42", "zendesk": "9912"}."""
TimeZoneName = Annotated[str, AfterValidator(check_timezone)]
PhoneRegion = Annotated[str, AfterValidator(identities.check_phone_region)]
"""Where numbers without + are read ("" for nowhere): an ISO country code."""
Locale = Annotated[str, AfterValidator(check_locale)]


class IdentifyContact(BaseModel):
    """Create or update a contact. Traits merge into the stored ones; a null trait is removed."""

    model_config = ConfigDict(extra="forbid")

    key: ContactKey
    emails: list[Email] = []
    phones: list[Phone] = []
    push_tokens: list[PushToken] = []
    devices: list[DeviceId] = []
    anonymous_ids: list[AnonymousId] = []
    external_ids: ExternalIds = {}
    """One id per source system: a second, different id from the same system is refused."""
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
    devices: list[str] = []
    anonymous_ids: list[str] = []
    external_ids: dict[str, str] = {}
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
    segments: dict[str, bool] = {}
    """Membership in the segments the step's conditions name, when it was loaded."""
