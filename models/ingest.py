"""The HTTP event API's messages: Segment's wire shapes, and what the ingest queue keeps.

The wire models take exactly the fields Segment's HTTP Tracking API defines
(what `segment-analytics-python` and the other Segment libraries send) and
refuse any other, so a typo is an error naming the field rather than data
silently dropped. Each accepted message becomes a `QueuedMessage`: the call the
router will make (`identify`, `track` or `alias`), validated by tidings' own
rules before anything is written.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tidings.models.contact import Email, Locale, Phone, TimeZoneName
from tidings.models.policy import Jurisdiction
from tidings.models.primitives import ContactKey, EventName, Properties

SegmentId = Annotated[str, StringConstraints(min_length=1, max_length=300)]
"""An anonymousId, previousId or groupId: the sender's own ids, kept in the app database
(never in Temporal)."""
UserId = ContactKey
"""A userId is the contact's key (see `TidingsClient.contact_for`), so it follows the
key's rules: never an email or phone number, which would reach Temporal unencrypted."""
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
JsonObject = dict[str, JsonValue]
_PROPERTIES: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(Properties)

PAGE_EVENT = "page_viewed"
SCREEN_EVENT = "screen_viewed"
GROUP_EVENT = "group_joined"
"""The event names `page`, `screen` and `group` calls are recorded under."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel)


class _Message(_Wire):
    """The fields every Segment call may carry (Segment's "common fields")."""

    message_id: MessageId | None = None
    timestamp: AwareDatetime | None = None
    original_timestamp: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    received_at: AwareDatetime | None = None
    integrations: JsonObject | None = None
    metadata: JsonObject | None = Field(default=None, alias="_metadata")
    version: int | str | None = None
    channel: str | None = None
    write_key: str | None = None
    user_id: UserId | None = None
    anonymous_id: SegmentId | None = None

    @model_validator(mode="after")
    def _someone(self) -> _Message:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("userId or anonymousId is required: whom the message is about")
        return self


class IdentifyTraits(BaseModel):
    """Traits of `identify`; these few become the contact's addresses and settings,
    the others its traits."""

    model_config = ConfigDict(extra="allow")

    email: Email | None = None
    phone: Phone | None = None
    timezone: TimeZoneName | None = None
    locale: Locale | None = None
    jurisdiction: Jurisdiction | None = None

    @model_validator(mode="after")
    def _bounded(self) -> IdentifyTraits:
        _PROPERTIES.validate_python(self.model_extra or {})  # event properties' bounds
        return self


class IdentifyContext(BaseModel):
    """Segment's `context`; a device's time zone and locale apply to the contact."""

    model_config = ConfigDict(extra="allow")

    timezone: TimeZoneName | None = None
    locale: Locale | None = None


class _AnyContext(_Message):
    context: JsonObject | None = None


class Identify(_Message):
    type: Literal["identify"] = "identify"
    traits: IdentifyTraits | None = None
    context: IdentifyContext | None = None


class Track(_AnyContext):
    type: Literal["track"] = "track"
    event: EventName
    properties: Properties | None = None


class Page(_AnyContext):
    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = None
    properties: Properties | None = None


class Screen(_AnyContext):
    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = None
    properties: Properties | None = None


class Group(_AnyContext):
    type: Literal["group"] = "group"
    group_id: SegmentId
    traits: Properties | None = None


class Alias(_AnyContext):
    type: Literal["alias"] = "alias"
    previous_id: SegmentId
    user_id: UserId


SegmentMessage = Annotated[
    Identify | Track | Page | Screen | Group | Alias, Field(discriminator="type")
]
MESSAGE_TYPES: dict[str, type[_Message]] = {
    "identify": Identify,
    "track": Track,
    "page": Page,
    "screen": Screen,
    "group": Group,
    "alias": Alias,
}


class Batch(_Wire):
    """`POST /v1/batch`: what Segment's libraries send (all of them batch)."""

    batch: list[SegmentMessage] = Field(min_length=1)
    context: JsonObject | None = None
    integrations: JsonObject | None = None
    metadata: JsonObject | None = Field(default=None, alias="_metadata")
    sent_at: AwareDatetime | None = None
    write_key: str | None = None


# What the queue keeps: the call to make, already valid by tidings' rules.


class QueuedIdentify(BaseModel):
    kind: Literal["identify"] = "identify"
    user_id: str | None
    anonymous_id: str | None
    emails: list[str] = []
    phones: list[str] = []
    timezone: str | None = None
    locale: str | None = None
    jurisdiction: str | None = None
    traits: dict[str, JsonValue] = {}


class QueuedTrack(BaseModel):
    kind: Literal["track"] = "track"
    user_id: str | None
    anonymous_id: str | None
    event: str
    properties: dict[str, JsonValue] = {}
    event_id: str
    occurred_at: AwareDatetime


class QueuedAlias(BaseModel):
    kind: Literal["alias"] = "alias"
    previous_id: str
    user_id: str


QueuedMessage = Annotated[QueuedIdentify | QueuedTrack | QueuedAlias, Field(discriminator="kind")]


def to_queued(
    message: _Message,
    *,
    key_name: str,
    message_id: str,
    received_at: datetime,
    sent_at: datetime | None,
) -> QueuedIdentify | QueuedTrack | QueuedAlias:
    """The call `message` asks for. Event ids are the write key's name and the
    messageId, so a message routed twice (after a crash) is one event."""
    if isinstance(message, Alias):
        return QueuedAlias(previous_id=message.previous_id, user_id=message.user_id)
    if isinstance(message, Identify):
        traits = message.traits or IdentifyTraits()
        context = message.context or IdentifyContext()
        return QueuedIdentify(
            user_id=message.user_id,
            anonymous_id=message.anonymous_id,
            emails=[traits.email] if traits.email else [],
            phones=[traits.phone] if traits.phone else [],
            timezone=traits.timezone or context.timezone,
            locale=traits.locale or context.locale,
            jurisdiction=traits.jurisdiction,
            traits=dict(traits.model_extra or {}),
        )
    event, properties = _as_event(message)
    return QueuedTrack(
        user_id=message.user_id,
        anonymous_id=message.anonymous_id,
        event=event,
        properties=properties,
        event_id=f"{key_name}:{message_id}",
        occurred_at=occurred_at(message, received_at=received_at, sent_at=sent_at),
    )


def _as_event(message: _Message) -> tuple[str, dict[str, JsonValue]]:
    if isinstance(message, Track):
        return message.event, dict(message.properties or {})
    if isinstance(message, Page | Screen):
        properties = dict(message.properties or {})
        for field, value in (("name", message.name), ("category", message.category)):
            if value is not None:
                properties.setdefault(field, value)
        return (PAGE_EVENT if isinstance(message, Page) else SCREEN_EVENT), properties
    if isinstance(message, Group):
        return GROUP_EVENT, {"group_id": message.group_id, "traits": dict(message.traits or {})}
    raise TypeError(f"{type(message).__name__} is not an event")


def occurred_at(message: _Message, *, received_at: datetime, sent_at: datetime | None) -> datetime:
    """When it happened, corrected for the sender's clock as Segment does: the time
    between the message's timestamp and its sentAt, counted back from receipt."""
    stamped = message.timestamp or message.original_timestamp
    sent = message.sent_at or sent_at
    if stamped is None:
        return received_at
    if sent is None:
        return stamped
    return received_at - max(sent - stamped, timedelta(0))


def stream_of(queued: QueuedIdentify | QueuedTrack | QueuedAlias) -> str:
    """Messages of one stream route in the order they were accepted: the person as the
    sender names them (an alias belongs to the user it names)."""
    if queued.user_id is not None:
        return f"user:{queued.user_id}"
    assert not isinstance(queued, QueuedAlias)  # an alias always names its user
    return f"anonymous:{queued.anonymous_id}"
