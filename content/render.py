"""Rendering one template version for one contact, on one channel, in one locale.

Pure: the caller resolves the version and translation and performs the
lookups; this decides between the content and its fallback, renders in the
sandbox with the recipient's locale and time zone, and refuses output a
person should never get (a blank subject, "None", raw `{{ }}`).
"""

from __future__ import annotations

import re
from typing import Any

import css_inline
from jinja2 import Template
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape
from pydantic import BaseModel, JsonValue

from tidings.content.environment import LOCALE_VAR, TIMEZONE_VAR, environments
from tidings.content.spec import StoredTemplate, TemplateSpec, Variants
from tidings.models.events import JourneyEvent

_LEFTOVER = re.compile(r"\{\{|\{%")
"""Template syntax that survived rendering. Jinja renders every tag it parsed, so
this can only come from data (or a raw block): a value that looks like template
syntax is treated as an injection attempt and that content is not sent. Closing
braces alone are not suspicious (JSON chat blocks and CSS end in them)."""
REQUIRED_PARTS = {
    "email": ("subject", "text"),
    "sms": ("text",),
    "push": ("title", "body"),
    "chat": ("text",),
    "in_app": ("title", "body"),
}
"""Parts that must not come out blank."""


class RenderError(Exception):
    """The template cannot be rendered for this contact; the message says why and how to fix."""


class ContactFields(BaseModel):
    """The contact data a template may read (already narrowed to what it declares)."""

    key: str
    timezone: str | None = None
    locale: str | None = None
    traits: dict[str, JsonValue] = {}


class Rendered(BaseModel):
    """What goes out on one channel."""

    channel: str
    parts: dict[str, str]
    locale: str
    used_fallback: bool = False
    fallback_reason: str = ""


class Inputs(BaseModel):
    """Everything a render may read, before the template narrows it to its fields."""

    contact: ContactFields
    event: JourneyEvent
    trigger: JourneyEvent
    lookups: dict[str, JsonValue] = {}
    """Lookup results by name; a failed lookup is absent."""
    brand: dict[str, JsonValue] = {}
    unsubscribe_url: str | None = None


def render(
    stored: StoredTemplate,
    *,
    template: str,
    channel: str,
    content: Variants,
    fallback: Variants | None,
    locale: str,
    inputs: Inputs,
) -> Rendered:
    """Render `content` (a source or a translation) on `channel`, or its fallback."""
    spec = stored.spec
    data, missing = _data(stored, inputs)
    problem = (
        f"template {template!r} needs {', '.join(missing)}, which is missing for contact "
        f"{inputs.contact.key!r} (no such data, or the lookup failed)"
        if missing
        else ""
    )
    if not problem:
        try:
            return Rendered(
                channel=channel,
                parts=_render_variant(stored, content, channel, data, locale, inputs),
                locale=locale,
            )
        except RenderError as err:
            problem = str(err)
    chosen = next(
        (v for v in (fallback, spec.fallback) if v is not None and channel in v.channels()), None
    )
    if chosen is None:
        fix = "give the field a default or add" if missing else "add"
        raise RenderError(
            f"{problem}; {fix} a `fallback:` {channel} variant to templates/{template}.yaml"
        )
    try:
        parts = _render_variant(stored, chosen, channel, data, locale, inputs)
    except RenderError as err:
        raise RenderError(
            f"{problem}; the fallback failed too: {err} (a fallback must not read what may "
            "be missing)"
        ) from err
    return Rendered(
        channel=channel, parts=parts, locale=locale, used_fallback=True, fallback_reason=problem
    )


def declared_data(spec: TemplateSpec, inputs: Inputs) -> tuple[dict[str, Any], list[str]]:
    """The declared fields (or their defaults), and the required ones that are missing.

    Nothing undeclared is passed: the template sees only what it says it reads.
    """
    sources: dict[str, Any] = {
        "contact": inputs.contact.model_dump(),
        "event": {"properties": inputs.event.properties},
        "trigger": {"properties": inputs.trigger.properties},
    }
    data: dict[str, Any] = {}
    missing = []
    for name, decl in spec.fields.items():
        path = tuple(name.split("."))
        value = _lookup(sources, path)
        if value is None:
            if decl.required:
                missing.append(name)
                continue
            value = decl.default
        _store(data, path, value)
    return data, missing


def _data(stored: StoredTemplate, inputs: Inputs) -> tuple[dict[str, Any], list[str]]:
    """The whole render context, and what is missing from it (fields, failed lookups)."""
    data, missing = declared_data(stored.spec, inputs)
    data.update(brand=inputs.brand, lookup=dict(inputs.lookups))
    if inputs.unsubscribe_url is not None:
        data["unsubscribe_url"] = inputs.unsubscribe_url
    missing += [f"lookup.{name}" for name in stored.spec.lookups if name not in inputs.lookups]
    return data, missing


def _render_variant(
    stored: StoredTemplate,
    variants: Variants,
    channel: str,
    data: dict[str, Any],
    locale: str,
    inputs: Inputs,
) -> dict[str, str]:
    sources = variants.channels().get(channel)
    if sources is None:
        raise RenderError(f"the template has no {channel} variant")
    text_env, html_env = environments(tuple(sorted(stored.partials.items())))
    context = {**data, LOCALE_VAR: locale, TIMEZONE_VAR: inputs.contact.timezone or "UTC"}
    parts: dict[str, str] = {}
    for part, source in sources.items():
        env = html_env if part == "html" else text_env
        try:
            rendered = _compiled(env, source).render(context)
        except Exception as err:  # a template error, or e.g. a division by zero in its data
            raise RenderError(
                f"{channel}.{part} failed to render: {type(err).__name__}: {err}"
            ) from err
        if _LEFTOVER.search(rendered):
            raise RenderError(
                f"{channel}.{part} came out with template syntax in it (a value in the data "
                "contains '{{' or '{%')"
            )
        parts[part] = rendered
    for part in REQUIRED_PARTS[channel]:
        if not parts.get(part, "").strip():
            raise RenderError(f"{channel}.{part} came out blank")
    if channel == "email":
        parts["subject"] = " ".join(parts["subject"].split())
        if "html" in parts:
            parts["html"] = _with_preheader(
                css_inline.inline(parts["html"]), parts.get("preheader")
            )
    return parts


def _with_preheader(html: str, preheader: str | None) -> str:
    """The preheader as the hidden first text of the body (the inbox preview line)."""
    if not preheader:
        return html
    # Rendered as text (it is also the inbox preview line), so escaped here.
    hidden = (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
        f"{escape(preheader)}</div>"
    )
    body = re.search(r"<body[^>]*>", html)
    return html[: body.end()] + hidden + html[body.end() :] if body else hidden + html


def _compiled(env: SandboxedEnvironment, source: str) -> Template:
    """Compiled once per environment (environments are cached per partial set)."""
    compiled: dict[str, Template] = env.__dict__.setdefault("tidings_compiled", {})
    template = compiled.get(source)
    if template is None:
        template = compiled[source] = env.from_string(source)
    return template


def _lookup(sources: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = sources
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _store(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
