"""Rendering a template for one contact, with only the fields the template declares."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Template
from pydantic import BaseModel, JsonValue

from tidings.models.events import JourneyEvent
from tidings.models.template import HTML_ENV, TEXT_ENV, EmailTemplate


class RenderError(Exception):
    """The template cannot be rendered for this contact; the message says why and how to fix."""


class RenderedEmail(BaseModel):
    subject: str
    text: str
    html: str | None


class ContactFields(BaseModel):
    """The contact data a template may read (already narrowed to what it declares)."""

    key: str
    timezone: str | None = None
    locale: str | None = None
    traits: dict[str, JsonValue] = {}


def template_data(
    template: EmailTemplate,
    *,
    contact: ContactFields,
    event: JourneyEvent,
    trigger: JourneyEvent,
) -> dict[str, Any]:
    """The render context: each declared field, its default, or a RenderError if required."""
    sources: dict[str, Any] = {
        "contact": contact.model_dump(),
        "event": {"properties": event.properties},
        "trigger": {"properties": trigger.properties},
    }
    data: dict[str, Any] = {}
    missing = []
    for path, decl in template.declared().items():
        value = _lookup(sources, path)
        if value is None:
            if decl.required:
                missing.append(".".join(path))
                continue
            value = decl.default
        _store(data, path, value)
    if missing:
        raise RenderError(
            f"template {template.name!r} needs {', '.join(missing)}, which contact "
            f"{contact.key!r} or its event does not have; give the field a default "
            f"in templates/{template.name}.yaml or provide the data"
        )
    return data


def render(template: EmailTemplate, data: dict[str, Any]) -> RenderedEmail:
    try:
        subject = _compiled(template.subject, html=False).render(data)
        text = _compiled(template.text, html=False).render(data)
        html = _compiled(template.html, html=True).render(data) if template.html else None
    except Exception as err:  # a template error, or e.g. a division by zero in its data
        raise RenderError(
            f"template {template.name!r} failed to render: {type(err).__name__}: {err}"
        ) from err
    return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html)


@lru_cache(maxsize=512)
def _compiled(source: str, *, html: bool) -> Template:
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


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
