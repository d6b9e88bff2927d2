"""Safe conditions for triggers and branches: jinja2 expressions in a sandbox.

Conditions are data written by journey authors, so they are never passed to
`eval`. They are parsed by jinja2, checked against the fields that can exist
before a journey is accepted, and evaluated in a `SandboxedEnvironment`.
Evaluation is pure, so it may run inside workflow code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2.exceptions import TemplateError, UndefinedError
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from tidings.models.events import PropertySchema

_ENV = SandboxedEnvironment(undefined=ChainableUndefined)
# Conditions run in workflow code, which must decide the same way on replay:
# jinja2's only sources of randomness go.
del _ENV.filters["random"]
del _ENV.globals["lipsum"]

CONTACT_FIELDS = ("key", "timezone", "locale", "traits")
EVENT_FIELDS = ("name", "properties", "occurred_at")

TRIGGER_ROOTS = ("contact", "event", "properties")
"""Names a trigger's `where` may use: the incoming event and the contact."""
STEP_ROOTS = ("contact", "trigger", "event", "properties", "received")
"""Names a branch may use: `event` is the latest event the journey waited for
(the trigger until then), `properties` its properties, `received` counts the
events the journey has received by name."""


SEGMENT_CALL = "in_segment"
"""`contact.in_segment('at-risk')`: whether the contact is in a named segment (segments/)."""


class ExpressionError(ValueError):
    """An expression is malformed, names a field that cannot exist, or failed."""


@dataclass(frozen=True)
class FieldRef:
    """A field an expression reads, e.g. contact.traits.tier."""

    root: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))


def _parse(source: str) -> nodes.Expr:
    try:
        parser = Parser(_ENV, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise ExpressionError(
                f"unexpected {parser.stream.current.value!r} after the expression"
            )
    except TemplateError as err:
        raise ExpressionError(f"cannot parse {source!r}: {err.message}") from err
    return expr


def field_chain(node: nodes.Node) -> FieldRef | None:
    """The dotted field a Name/Getattr/Getitem chain reads, if it is one."""
    if isinstance(node, nodes.Name):
        return FieldRef(node.name, ())
    if isinstance(node, nodes.Getattr):
        inner = field_chain(node.node)
        return FieldRef(inner.root, (*inner.path, node.attr)) if inner else None
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        inner = field_chain(node.node)
        return FieldRef(inner.root, (*inner.path, node.arg.value)) if inner else None
    return None


@lru_cache(maxsize=1024)
def fields_read(source: str) -> tuple[FieldRef, ...]:
    """Every field `source` reads, outermost chains only."""
    found: list[FieldRef] = []

    def walk(node: nodes.Node) -> None:
        ref = field_chain(node)
        if ref is not None:
            found.append(ref)
            return
        for child in node.iter_child_nodes():
            walk(child)

    walk(_parse(source))
    return tuple(found)


@lru_cache(maxsize=1024)
def segments_read(source: str) -> tuple[str, ...]:
    """The segments `source` asks about with `contact.in_segment('name')`, in order.

    Membership is data from the database, so the caller (a trigger's router, the
    activity that loads a step's contact) computes it for exactly these names.
    """
    names: list[str] = []
    for call in _segment_calls(_parse(source)):
        arg = call.args[0] if len(call.args) == 1 else None
        if (
            call.kwargs
            or call.dyn_args
            or call.dyn_kwargs
            or not isinstance(arg, nodes.Const)
            or not isinstance(arg.value, str)
        ):
            raise ExpressionError(
                f"{source!r}: contact.{SEGMENT_CALL} takes one segment name in quotes, "
                f"e.g. contact.{SEGMENT_CALL}('at-risk')"
            )
        if arg.value not in names:
            names.append(arg.value)
    return tuple(names)


def _segment_calls(tree: nodes.Expr) -> list[nodes.Call]:
    """Every `contact.in_segment(...)` call in the tree, the tree itself included."""
    return [
        call
        for call in (tree, *tree.find_all(nodes.Call))
        if isinstance(call, nodes.Call)
        and isinstance(call.node, nodes.Getattr)
        and call.node.attr == SEGMENT_CALL
        and isinstance(call.node.node, nodes.Name)
        and call.node.node.name == "contact"
    ]


def _check_segment_calls(source: str, refs: tuple[FieldRef, ...]) -> None:
    """`contact.in_segment` is only ever called, with a segment name (see segments_read)."""
    segments_read(source)
    uses = [ref for ref in refs if ref.root == "contact" and ref.path[:1] == (SEGMENT_CALL,)]
    calls = _segment_calls(_parse(source))
    if len(uses) != len(calls) or any(ref.path != (SEGMENT_CALL,) for ref in uses):
        raise ExpressionError(
            f"{source!r} uses contact.{SEGMENT_CALL} without calling it; "
            f"write contact.{SEGMENT_CALL}('segment-name')"
        )


def check_expression(
    source: str,
    *,
    roots: tuple[str, ...],
    trigger_event: str,
    trigger_properties: PropertySchema,
) -> tuple[FieldRef, ...]:
    """Reject an expression that reads a field that cannot exist.

    Returns the fields it reads, so callers can load only those (data
    minimization). Properties of the trigger event are checked against its
    declared schema when the journey declares one.
    """
    tree = _parse(source)
    try:
        _compiled(source)
    except TemplateError as err:
        raise ExpressionError(f"cannot compile {source!r}: {err.message}") from err
    for node in (tree, *tree.find_all(nodes.Getattr)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise ExpressionError(
                f"{source!r} reads {node.attr!r}; attributes starting with _ are not allowed"
            )
    refs = fields_read(source)
    _check_segment_calls(source, refs)
    for ref in refs:
        if ref.root not in roots:
            raise ExpressionError(
                f"{source!r} uses {ref.root!r}, which is not available here; "
                f"use one of: {', '.join(roots)}"
            )
        if ref.root == "contact" and ref.path == (SEGMENT_CALL,):
            continue
        first = ref.path[0] if ref.path else None
        if ref.root == "contact" and ref.path in ((), ("traits",)):
            raise ExpressionError(
                f"{source!r} reads {ref} as a whole; name the fields it needs, e.g. "
                "contact.traits.vip (only the fields a condition names are loaded)"
            )
        if ref.root == "contact" and first is not None and first not in CONTACT_FIELDS:
            raise ExpressionError(
                f"{source!r} reads contact.{first}, which contacts do not have "
                f"(fields: {', '.join(CONTACT_FIELDS)}); "
                f"if it is a trait, write contact.traits.{first}"
            )
        if ref.root in ("event", "trigger") and first is not None and first not in EVENT_FIELDS:
            raise ExpressionError(
                f"{source!r} reads {ref.root}.{first}, which events do not have "
                f"(fields: {', '.join(EVENT_FIELDS)}); "
                f"if it is a property, write {ref.root}.properties.{first}"
            )
        prop = _trigger_property(ref, roots)
        if prop is not None and trigger_properties and prop not in trigger_properties:
            raise ExpressionError(
                f"{source!r} reads property {prop!r}, which the trigger event "
                f"{trigger_event!r} does not declare (declared: "
                f"{', '.join(trigger_properties)}); add it under trigger.properties"
            )
    return refs


def _trigger_property(ref: FieldRef, roots: tuple[str, ...]) -> str | None:
    """The trigger-event property a reference reads, if it reads one."""
    in_trigger = roots == TRIGGER_ROOTS
    if ref.root == "properties" and in_trigger and ref.path:
        return ref.path[0]
    reads_trigger = ref.root == "trigger" or (ref.root == "event" and in_trigger)
    if reads_trigger and len(ref.path) >= 2 and ref.path[0] == "properties":
        return ref.path[1]
    return None


class ContactValues(dict[str, Any]):
    """A contact as conditions see it: its fields, and `in_segment(name)`, answered
    from the memberships loaded with it under "segments" (never from the database)."""

    def in_segment(self, name: str) -> bool:
        segments = self.get("segments")
        return bool(isinstance(segments, Mapping) and segments.get(name, False))


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


def evaluate(source: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a condition.

    A condition over data the contact or event lacks is false (a missing trait
    compared with a number is not a match); a clash of types is an error.
    """
    values = dict(context)
    if "received" in values:
        values["received"] = Counter(values["received"])
    if isinstance(values.get("contact"), Mapping):
        values["contact"] = ContactValues(values["contact"])
    try:
        return bool(_compiled(source)(**values))
    except UndefinedError:
        return False
    except (TemplateError, TypeError, ValueError, ArithmeticError) as err:
        raise ExpressionError(f"{source!r} could not be evaluated: {err}") from err
