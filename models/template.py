"""Email templates: files in `templates/`, checked when they are loaded.

A template declares every field it reads (data minimization: the send
activity loads and passes only those), with a default for each optional one.
Bodies are jinja2 in a sandbox; a template that reads an undeclared field is
refused when it is loaded, not when a contact is about to get it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jinja2 import StrictUndefined, meta, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from tidings.models.expressions import CONTACT_FIELDS, FieldRef, field_chain

TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
HTML_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)

TEMPLATE_ROOTS = ("contact", "event", "trigger")
PARTS = ("subject", "text", "html")


class FieldDecl(BaseModel):
    """A field a template reads: required, or optional with a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = True
    default: JsonValue = None


def _parse_decl(value: Any) -> Any:
    if value == "required":
        return {"required": True}
    if isinstance(value, dict) and "default" in value:
        return {"required": False, **value}
    return value


class EmailTemplate(BaseModel):
    """One email template file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    channel: Literal["email"] = "email"
    description: str = ""
    subject: str = Field(min_length=1)
    text: str = Field(min_length=1)
    html: str | None = None
    fields: dict[str, Annotated[FieldDecl, BeforeValidator(_parse_decl)]] = {}
    rationale: str | None = None
    """The legal rationale when this template is sent as transactional or critical."""

    def parts(self) -> dict[str, str]:
        found = {"subject": self.subject, "text": self.text}
        if self.html is not None:
            found["html"] = self.html
        return found

    def declared(self) -> dict[tuple[str, ...], FieldDecl]:
        return {tuple(name.split(".")): decl for name, decl in self.fields.items()}


def template_problems(template: EmailTemplate) -> list[str]:
    """Syntax errors, bad declarations and undeclared reads, one line each."""
    problems = [f"fields: {p}" for name in template.fields for p in _declaration_problems(name)]
    declared = template.declared()
    for part, source in template.parts().items():
        env = HTML_ENV if part == "html" else TEXT_ENV
        try:
            ast = env.parse(source)
        except TemplateSyntaxError as err:
            problems.append(f"{part} line {err.lineno}: {err.message}")
            continue
        for ref in _reads(ast):
            path = (ref.root, *ref.path)
            if not any(path[: len(d)] == d for d in declared):
                problems.append(
                    f"{part}: uses {ref} but does not declare it; add it under "
                    f"`fields:` (e.g. `{_suggest(ref)}: {{default: ...}}` or `: required`)"
                )
    return problems


def _declaration_problems(name: str) -> list[str]:
    parts = name.split(".")
    root = parts[0]
    if root not in TEMPLATE_ROOTS:
        return [f"{name!r} must start with one of: {', '.join(TEMPLATE_ROOTS)}"]
    if root == "contact":
        if len(parts) < 2 or parts[1] not in CONTACT_FIELDS:
            return [f"{name!r}: contacts have {', '.join(CONTACT_FIELDS)}"]
        if parts[1] == "traits" and len(parts) != 3:
            return [f"{name!r}: declare one trait at a time, e.g. contact.traits.first_name"]
        if parts[1] != "traits" and len(parts) != 2:
            return [f"{name!r}: contact.{parts[1]} has no sub-fields"]
    elif len(parts) < 3 or parts[1] != "properties":
        return [f"{name!r}: declare one property, e.g. {root}.properties.cart_url"]
    return []


def _suggest(ref: FieldRef) -> str:
    if ref.root == "contact":
        return ".".join(("contact", *ref.path[:2]))
    return ".".join((ref.root, *ref.path[:2]))


def _reads(ast: nodes.Template) -> list[FieldRef]:
    """Field chains read from context variables (loop variables excluded)."""
    context_names = meta.find_undeclared_variables(ast)
    found: list[FieldRef] = []

    def walk(node: nodes.Node) -> None:
        ref = field_chain(node)
        if ref is not None:
            if ref.root in context_names:
                found.append(ref)
            return
        for child in node.iter_child_nodes():
            walk(child)

    walk(ast)
    return found
