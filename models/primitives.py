"""Validated names, durations and property values shared by every model."""

from __future__ import annotations

import json
import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    JsonValue,
    PlainSerializer,
    StringConstraints,
)


def _named(pattern: str, what: str, rule: str) -> AfterValidator:
    """A string type whose error message says what a valid value looks like."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}: {rule}")
        return value

    return AfterValidator(check)


def _check_contact_key(value: str) -> str:
    if "@" in value or value.startswith("+"):
        raise ValueError(
            f"{value!r} looks like an email or phone number; contact keys appear unencrypted "
            "in workflow ids and search attributes, so use your internal customer id or a "
            "random id, and pass addresses with --email/--phone"
        )
    kind = value.partition(":")[0]
    if ":" in value and kind in REFERENCE_KINDS:
        raise ValueError(
            f"the contact key {value[:40]!r} starts with {kind + ':'!r}, which names an "
            f"identity ({kind}:VALUE) rather than a key; keys may not start with "
            f"{', '.join(k + ':' for k in REFERENCE_KINDS)}. Use your internal customer id"
        )
    if not _CONTACT_KEY.fullmatch(value):
        size = "empty" if not value else f"{len(value)} characters long"
        raise ValueError(
            f"the contact key {value[:40]!r} is {size} or has other characters; "
            f"it must be {CONTACT_KEY_RULE}"
        )
    return value


REFERENCE_KINDS = ("email", "phone", "device", "push", "anonymous", "external")
"""A contact reference `kind:value` names a contact by one of its identities; a key
never starts with one of these kinds and a colon, so a reference and a key cannot be
mistaken for each other (see `tidings.identities`)."""
_CONTACT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
CONTACT_KEY_RULE = "1-128 characters from A-Z a-z 0-9 _ . : - starting with a letter or digit"
# Keys appear in workflow ids and search attributes, which are not encrypted:
# the character set leaves out "@" and "+", so an email or E.164 phone number
# can never be used as a key by accident.
ContactKey = Annotated[str, AfterValidator(_check_contact_key)]
EventName = Annotated[
    str,
    _named(r"[A-Za-z][A-Za-z0-9_.-]{0,99}", "event name", "a letter, then letters, digits, _ . -"),
]
JourneyName = Annotated[
    str, _named(r"[a-z0-9][a-z0-9-]{0,63}", "journey name", "lowercase letters, digits and -")
]
TemplateName = Annotated[
    str, _named(r"[a-z0-9][a-z0-9_-]{0,99}", "template name", "lowercase letters, digits, _ -")
]
StepId = Annotated[
    str, _named(r"[a-z0-9][a-z0-9_-]{0,63}", "step id", "lowercase letters, digits, _ -")
]
Topic = Annotated[
    str, _named(r"[a-z0-9][a-z0-9_-]{0,63}", "topic", "lowercase letters, digits, _ -")
]
TraitName = Annotated[
    str, _named(r"[A-Za-z_][A-Za-z0-9_]{0,63}", "trait name", "letters, digits and _")
]
RoleName = Annotated[
    str, _named(r"[a-z0-9][a-z0-9_-]{0,39}", "role", "lowercase letters, digits, _ -")
]
UserName = Annotated[
    str,
    _named(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "user name", "letters, digits, _ . - (no email)"),
]
"""An approver or operator as the directory names them: it lands in workflow histories,
so it is a login, never an email address."""
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

END = "end"
"""The reserved step target that finishes a journey."""

Purpose = Literal["transactional", "service", "marketing", "critical"]

MAX_PROPERTIES_BYTES = 32 * 1024
MAX_PROPERTY_DEPTH = 5


_DURATION_PART = re.compile(r"(\d+)(w|d|h|m|s)")
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(value: Any) -> Any:
    """Accept compact durations such as ``90s``, ``1h30m``, ``2d`` or ``-30d``.

    Anything else (a timedelta, seconds as a number, an ISO 8601 string from a
    serialized spec) is left to pydantic's own timedelta parsing.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if not body or body[0] in "Pp":
        return value
    parts = _DURATION_PART.findall(body)
    if "".join(n + u for n, u in parts) != body:
        raise ValueError(
            f"{value!r} is not a duration; write it like 90s, 15m, 1h30m, 2d or 1w "
            "(negative offsets like -30d where allowed)"
        )
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_DURATION_UNITS[unit]: int(number)})
    return sign * total


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration such as 1h or 2d")
    return value


# Serialized in the compact form, so workflow inputs read in the UI as written.
_compact = PlainSerializer(lambda d: format_duration(d), return_type=str)
Duration = Annotated[timedelta, BeforeValidator(parse_duration), _compact]
PositiveDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive), _compact
]


def format_duration(value: timedelta) -> str:
    """The compact form of a duration, e.g. ``1d2h``; the inverse of parse_duration."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return sign + ("".join(out) or "0s")


def parse_time_of_day(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(:00)?", value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a time of day; write it as HH:MM, e.g. 09:00")
        return time(int(match[1]), int(match[2]))
    return value


TimeOfDay = Annotated[
    time,
    BeforeValidator(parse_time_of_day),
    PlainSerializer(lambda t: f"{t:%H:%M}", return_type=str),
]


def _bounded_properties(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    for key in value:
        if not key or len(key) > 128:
            raise ValueError(f"property name {key!r} must be 1-128 characters")
    if _depth(value) > MAX_PROPERTY_DEPTH:
        raise ValueError(f"properties nest deeper than {MAX_PROPERTY_DEPTH} levels")
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_PROPERTIES_BYTES:
        raise ValueError(
            f"properties are {size} bytes of JSON; the limit is {MAX_PROPERTIES_BYTES}. "
            "Send ids and look details up in templates instead of whole documents"
        )
    return value


def _depth(value: JsonValue) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


Properties = Annotated[dict[str, JsonValue], AfterValidator(_bounded_properties)]
"""Event properties and contact traits: a bounded JSON object."""
