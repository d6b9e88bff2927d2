"""What a template is: its channel variants, the fields it reads, lookups, fallbacks.

Authored as YAML files in `templates/` (a source, `<name>.yaml`, and its
translations, `<name>.<locale>.yaml`), pushed into the database as
versions. The models here are both the file format and what a version
stores, so a version renders the same way forever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from tidings.models.primitives import PositiveDuration, Purpose

CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "preheader", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body", "deep_link"),
    "chat": ("text", "blocks"),
    "in_app": ("title", "body", "action"),
}
"""The parts of each channel's variant, each a jinja2 template."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldDecl(_Model):
    """A field a template reads: required, or optional with a default."""

    required: bool = True
    default: JsonValue = None


def _parse_decl(value: Any) -> Any:
    if value == "required":
        return {"required": True}
    if isinstance(value, dict) and "default" in value:
        return {"required": False, **value}
    return value


Fields = dict[str, Annotated[FieldDecl, BeforeValidator(_parse_decl)]]


class Lookup(_Model):
    """Real-time content: an HTTP GET done at send time, its JSON as `lookup.<name>`."""

    url: str = Field(min_length=1)
    """A jinja2 template over the declared fields, e.g. https://catalog/items/{{ ... }}."""

    @field_validator("url")
    @classmethod
    def _literal_host(cls, url: str) -> str:
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0]
        if scheme not in ("http", "https") or not host or "{" in host:
            raise ValueError(
                "a lookup URL starts with http:// or https:// and a fixed host; "
                "only its path and query may use fields"
            )
        return url

    timeout: PositiveDuration = timedelta(seconds=2)
    cache: PositiveDuration | None = None
    """Reuse a response for this long (the same URL), sparing the service."""


class EmailVariant(_Model):
    subject: str = Field(min_length=1)
    preheader: str | None = None
    text: str = Field(min_length=1)
    html: str | None = None


class SmsVariant(_Model):
    text: str = Field(min_length=1)


class PushVariant(_Model):
    title: str = Field(min_length=1)
    body: str = Field(min_length=1)
    deep_link: str | None = None


class ChatVariant(_Model):
    text: str = Field(min_length=1)
    blocks: str | None = None
    """Block Kit or Adaptive Card JSON, as a template."""


class InAppVariant(_Model):
    title: str = Field(min_length=1)
    body: str = Field(min_length=1)
    action: str | None = None


class Variants(_Model):
    """One piece of content on each channel it can go out on."""

    email: EmailVariant | None = None
    sms: SmsVariant | None = None
    push: PushVariant | None = None
    chat: ChatVariant | None = None
    in_app: InAppVariant | None = None

    def channels(self) -> dict[str, dict[str, str]]:
        """channel -> part -> template source, for the parts present."""
        found: dict[str, dict[str, str]] = {}
        for channel in CHANNEL_PARTS:
            variant = getattr(self, channel)
            if variant is not None:
                parts = variant.model_dump(exclude_none=True)
                found[channel] = {k: v for k, v in parts.items() if isinstance(v, str)}
        return found


class TemplateSpec(Variants):
    """A template's source file."""

    description: str = ""
    source_locale: str = "en"
    fields: Fields = {}
    lookups: dict[str, Lookup] = {}
    fallback: Variants | None = None
    """Used when a required field is missing or a lookup fails (a generic block)."""
    stale_translations: Literal["use", "skip"] = "use"
    """What a send does with a translation of an older version: use it, or skip to the
    next locale in the chain."""
    purpose: Purpose | None = None
    """The purpose the content is written for; lint checks disclosures by it."""
    rationale: str | None = None
    """The legal rationale when this template is sent as transactional or critical."""

    @model_validator(mode="after")
    def _some_channel(self) -> TemplateSpec:
        if not self.channels():
            raise ValueError(
                "a template needs at least one channel: email, sms, push, chat, in_app"
            )
        return self


class TranslationSpec(Variants):
    """A translation file: `<name>.<locale>.yaml`."""

    translates: int = Field(ge=1)
    """The source version it translates."""
    fallback: Variants | None = None


class StoredTemplate(_Model):
    """What one template version keeps: the source plus the partials it includes."""

    spec: TemplateSpec
    partials: dict[str, str] = {}
    """Included files (`_partials/footer.html`), snapshotted when pushed."""


class StoredTranslation(_Model):
    spec: TranslationSpec
