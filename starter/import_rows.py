"""The columns of import files, and each row checked by the models `identify` and `track`
validate with, so an imported row obeys exactly the rules of a call.

contacts: key, emails, phones, push_tokens, devices, anonymous_ids, timezone, locale,
jurisdiction, ids in source systems (CSV: one `external.<source>` column each; JSON
Lines: an `external_ids` object) and traits (CSV: one `trait.<name>` column each; JSON
Lines: a `traits` object). In CSV, several values of a list share a cell separated by `;`.

events: contact (a key or a reference such as email:ada@example.com), event,
occurred_at (ISO 8601 with an offset), event_id (optional), and properties (CSV:
`prop.<name>` columns and/or a `properties` cell holding a JSON object; JSON Lines: a
`properties` object).

A CSV cell that reads as JSON (42, true, null, "007") is taken as JSON, as `--trait`
and `--prop` take their values; an empty cell is no value at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import JsonValue, ValidationError

from tidings.catalog import Catalog
from tidings.db.identities import check_key
from tidings.errors import InputError
from tidings.identities import is_reference, parse_reference
from tidings.models.contact import IdentifyContact, phone_context
from tidings.models.events import TrackEvent
from tidings.starter.import_files import FileFormat
from tidings.starter.routing import check_properties

ImportKind = Literal["contacts", "events"]
KINDS: tuple[ImportKind, ...] = ("contacts", "events")

CONTACT_LISTS = ("emails", "phones", "push_tokens", "devices", "anonymous_ids")
CONTACT_COLUMNS = ("key", *CONTACT_LISTS, "timezone", "locale", "jurisdiction")
TRAIT_PREFIX = "trait."
EXTERNAL_PREFIX = "external."
EVENT_COLUMNS = ("contact", "event", "occurred_at", "event_id", "properties")
PROP_PREFIX = "prop."
REQUIRED = {"contacts": ("key",), "events": ("contact", "event", "occurred_at")}
_LIST_SEPARATOR = ";"
# The model checks the event's other fields; a reference in the contact column is
# checked by parse_reference and stands in as this key until it is resolved.
_REFERENCE_STAND_IN = "reference"


@dataclass(frozen=True)
class Problem:
    """Why a row is refused: the column at fault ("" for the row as a whole)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class RowRejected(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class EventRow:
    contact: str
    """The contact's key or a `kind:value` reference, as the file gave it."""
    event: TrackEvent
    """Validated; its contact_key is the contact's once resolved."""


def check_columns(kind: ImportKind, columns: list[str], *, where: str) -> None:
    """A CSV header with an unknown or missing column is refused before any row is read."""
    known, prefix = (
        (CONTACT_COLUMNS, TRAIT_PREFIX) if kind == "contacts" else (EVENT_COLUMNS, PROP_PREFIX)
    )
    prefixes = (prefix, EXTERNAL_PREFIX) if kind == "contacts" else (prefix,)
    unknown = [c for c in columns if c not in known and not any(_prefixed(c, p) for p in prefixes)]
    missing = [c for c in REQUIRED[kind] if c not in columns]
    problems = []
    if unknown:
        problems.append(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
        )
    if missing:
        problems.append(f"no {', '.join(map(repr, missing))} column")
    if problems:
        raise InputError(
            f"{where}: {'; '.join(problems)}. A {kind} file has the columns "
            f"{', '.join(known)} and {' and '.join(p + '<name>' for p in prefixes)} ones "
            f"(see `tidings import {kind} --help`)"
        )


def _prefixed(column: str, prefix: str) -> bool:
    return column.startswith(prefix) and len(column) > len(prefix)


def contact_from_row(
    values: dict[str, Any], fmt: FileFormat, *, phone_region: str
) -> IdentifyContact:
    """The row as an identify call, validated; RowRejected naming each bad column."""
    if fmt == "csv":
        data: dict[str, Any] = {}
        traits: dict[str, JsonValue] = {}
        external_ids: dict[str, str] = {}
        for column, cell in values.items():
            if cell is None or cell == "":
                continue
            if column.startswith(TRAIT_PREFIX):
                traits[column.removeprefix(TRAIT_PREFIX)] = cell_value(cell)
            elif column.startswith(EXTERNAL_PREFIX):
                external_ids[column.removeprefix(EXTERNAL_PREFIX)] = cell.strip()
            elif column in CONTACT_LISTS:
                data[column] = [v.strip() for v in cell.split(_LIST_SEPARATOR) if v.strip()]
            else:
                data[column] = cell.strip()
        if traits:
            data["traits"] = traits
        if external_ids:
            data["external_ids"] = external_ids
    else:
        data = values
    try:
        return IdentifyContact.model_validate(data, context=phone_context(phone_region))
    except ValidationError as err:
        raise RowRejected(_problems(err, _contact_column, fmt)) from None


def event_from_row(
    values: dict[str, Any],
    fmt: FileFormat,
    *,
    catalog: Catalog,
    default_event_id: str,
    phone_region: str,
) -> EventRow:
    """The row as a track call, validated; RowRejected naming each bad column."""
    data = _event_fields(values) if fmt == "csv" else dict(values)
    problems = []
    contact = data.pop("contact", None)
    if not isinstance(contact, str) or not contact.strip():
        problems.append(Problem("contact", "is required: the contact's key or a reference"))
        contact = _REFERENCE_STAND_IN
    contact = contact.strip()
    try:
        if is_reference(contact):
            parse_reference(contact, default_region=phone_region or None)
        else:
            check_key(contact)
    except InputError as err:
        problems.append(Problem("contact", str(err)))
    if data.get("occurred_at") in (None, ""):
        problems.append(
            Problem(
                "occurred_at",
                "is required: when it happened, in ISO 8601 with an offset, "
                "e.g. 2026-03-01T09:30:00+00:00",
            )
        )
    properties_problem = data.pop("_properties_problem", None)
    if properties_problem:
        problems.append(Problem("properties", properties_problem))
    for internal in ("contact_key", "name"):
        if internal in data:
            del data[internal]
            problems.append(Problem(internal, "is not a column of this kind of file"))
    data["contact_key"] = _REFERENCE_STAND_IN if is_reference(contact) else contact
    if data.get("event") not in (None, ""):
        data["name"] = data.pop("event")
    else:
        data.pop("event", None)
        problems.append(Problem("event", "is required: the event's name, e.g. signed_up"))
    if not data.get("event_id"):
        data["event_id"] = default_event_id
    try:
        event = TrackEvent.model_validate(data)
    except ValidationError as err:
        found = _problems(err, _event_column, fmt)
        problems += [p for p in found if p.field not in {q.field for q in problems}]
        raise RowRejected(problems) from None
    try:
        check_properties(catalog, event.name, event.properties)
    except InputError as err:
        problems.append(Problem("properties", str(err)))
    if problems:
        raise RowRejected(problems)
    return EventRow(contact, event)


def _event_fields(values: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    properties: dict[str, JsonValue] = {}
    raw = values.get("properties")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError as err:
            parsed, data["_properties_problem"] = None, f"is not JSON ({err})"
        if isinstance(parsed, dict):
            properties.update(parsed)
        elif "_properties_problem" not in data:
            data["_properties_problem"] = 'must be a JSON object like {"plan": "pro"}'
    for column, cell in values.items():
        if cell is None or cell == "" or column == "properties":
            continue
        if column.startswith(PROP_PREFIX):
            properties[column.removeprefix(PROP_PREFIX)] = cell_value(cell)
        else:
            data[column] = cell.strip()
    data["properties"] = properties
    return data


def cell_value(cell: str) -> JsonValue:
    """A CSV cell that reads as JSON is JSON (as `--trait k=v` reads v), else text."""
    try:
        value: JsonValue = json.loads(cell, parse_constant=_no_constants)
    except ValueError:
        return cell
    return value


def _no_constants(name: str) -> JsonValue:
    raise ValueError(f"{name} is not a JSON value")


def _contact_column(loc: tuple[int | str, ...], fmt: FileFormat) -> str:
    if loc[:1] == ("traits",) and len(loc) > 1 and fmt == "csv":
        return f"{TRAIT_PREFIX}{loc[1]}"
    if loc[:1] == ("external_ids",) and fmt == "csv":
        return f"{EXTERNAL_PREFIX}{loc[1] if len(loc) > 1 else '*'}"
    return str(loc[0]) if loc else ""


def _event_column(loc: tuple[int | str, ...], fmt: FileFormat) -> str:
    if not loc:
        return ""
    column = {"contact_key": "contact", "name": "event"}.get(str(loc[0]), str(loc[0]))
    if column == "properties" and len(loc) > 1 and fmt == "csv":
        return f"{PROP_PREFIX}{loc[1]}"
    return column


def _problems(err: ValidationError, column: Any, fmt: FileFormat) -> list[Problem]:
    found = []
    for error in err.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a column of this kind of file"
        elif error["type"] == "missing":
            message = "is required"
        found.append(Problem(column(error["loc"], fmt), message))
    return found
