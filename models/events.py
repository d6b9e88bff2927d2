"""Events: what backends send, what journeys receive, and declared property schemas."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, JsonValue

from tidings.models.primitives import ContactKey, EventId, EventName, Properties

PropertyType = Literal[
    "string", "number", "integer", "boolean", "datetime", "date", "list", "object"
]


class PropertySpec(BaseModel):
    """One declared event property: ``total: number`` or ``coupon: string?``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: PropertyType
    required: bool = True


def _parse_property_spec(value: Any) -> Any:
    if isinstance(value, str):
        optional = value.endswith("?")
        return {"type": value.rstrip("?"), "required": not optional}
    return value


PropertySchema = dict[str, Annotated[PropertySpec, BeforeValidator(_parse_property_spec)]]


def _matches(kind: PropertyType, value: JsonValue) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if not isinstance(value, str):
        return False
    try:
        if kind == "date":
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def property_problems(schema: PropertySchema, properties: dict[str, JsonValue]) -> list[str]:
    """What is wrong with `properties` under `schema`, one line per property."""
    problems = []
    for name, spec in schema.items():
        if name not in properties or properties[name] is None:
            if spec.required:
                problems.append(f"property {name!r} is required ({spec.type})")
            continue
        value = properties[name]
        if not _matches(spec.type, value):
            problems.append(f"property {name!r} must be {_article(spec.type)}, got {value!r}")
    return problems


def _article(kind: PropertyType) -> str:
    examples = {"date": "an ISO date like 2026-12-31", "datetime": "an ISO date-time"}
    return examples.get(kind, ("an " if kind[0] in "aeiou" else "a ") + kind)


class TrackEvent(BaseModel):
    """An event as a backend sends it with `track`."""

    model_config = ConfigDict(extra="forbid")

    contact_key: ContactKey
    name: EventName
    properties: Properties = {}
    event_id: EventId | None = None
    occurred_at: AwareDatetime | None = None


class JourneyEvent(BaseModel):
    """An event delivered to a journey workflow (start input and signal payload)."""

    model_config = ConfigDict(frozen=True)

    event_id: EventId
    name: EventName
    properties: dict[str, JsonValue] = {}
    occurred_at: AwareDatetime
