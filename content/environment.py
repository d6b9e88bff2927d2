"""The jinja2 sandbox templates render in: locale-aware filters, partials, static checks.

Formatting filters (`format_date`, `format_currency`, ...) use the
recipient's locale and time zone, which the renderer puts in the context;
partials come from the version's own snapshot, so a version renders the same
way forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import DictLoader, StrictUndefined, meta, nodes, pass_context
from jinja2.exceptions import TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from tidings.models.expressions import FieldRef, field_chain

LOCALE_VAR = "_locale"
TIMEZONE_VAR = "_timezone"
CONTEXT_ROOTS = ("contact", "event", "trigger", "lookup", "brand", "unsubscribe_url")
"""What a template may read; `contact`, `event` and `trigger` only as declared fields."""


def check_locale(tag: str) -> str:
    """The tag if babel knows the locale (fr-CA, pt-BR, de); ValueError otherwise."""
    try:
        Locale.parse(tag, sep="-")
    except (UnknownLocaleError, ValueError):
        raise ValueError(
            f"{tag!r} is not a locale babel knows; use a tag like fr-CA or de"
        ) from None
    return tag


def locale_chain(preferred: str | None, source: str) -> list[str]:
    """fr-CA -> fr-CA, fr, then the template's source locale."""
    chain: list[str] = []
    if preferred:
        parts = preferred.split("-")
        chain += ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    if source not in chain:
        chain.append(source)
    return chain


def _babel(context: Context) -> tuple[Locale, ZoneInfo]:
    return (
        Locale.parse(context.get(LOCALE_VAR) or "en", sep="-"),
        ZoneInfo(context.get(TIMEZONE_VAR) or "UTC"),
    )


def _moment(value: Any) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)


@pass_context
def _format_date(context: Context, value: Any, format: str = "medium") -> str:
    locale, tz = _babel(context)
    moment = _moment(value)
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        moment = moment.astimezone(tz)  # the recipient's date, not UTC's
    return format_date(moment, format=format, locale=locale)


@pass_context
def _format_datetime(context: Context, value: Any, format: str = "medium") -> str:
    locale, tz = _babel(context)
    moment = _moment(value)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, datetime.min.time())
    return format_datetime(moment, format=format, tzinfo=tz, locale=locale)


@pass_context
def _format_time(context: Context, value: Any, format: str = "short") -> str:
    locale, tz = _babel(context)
    return format_time(_moment(value), format=format, tzinfo=tz, locale=locale)  # type: ignore[arg-type]


@pass_context
def _format_number(context: Context, value: Any) -> str:
    return format_decimal(Decimal(str(value)), locale=_babel(context)[0])


@pass_context
def _format_currency(context: Context, value: Any, currency: str) -> str:
    return format_currency(Decimal(str(value)), currency, locale=_babel(context)[0])


@pass_context
def _format_percent(context: Context, value: Any) -> str:
    return format_percent(Decimal(str(value)), locale=_babel(context)[0])


FILTERS = {
    "format_date": _format_date,
    "format_datetime": _format_datetime,
    "format_time": _format_time,
    "format_number": _format_number,
    "format_currency": _format_currency,
    "format_percent": _format_percent,
}


def _no_none(value: Any) -> Any:
    """A None reaching the output is missing data, never the word "None" in a message."""
    if value is None:
        raise ValueError("a value is missing (None)")
    return value


def make_environment(partials: Mapping[str, str], *, html: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        loader=DictLoader(dict(partials)),
        keep_trailing_newline=True,
        finalize=_no_none,
    )
    env.filters.update(FILTERS)
    del env.filters["random"]
    del env.globals["lipsum"]
    return env


@lru_cache(maxsize=256)
def environments(partials: tuple[tuple[str, str], ...]) -> tuple[SandboxedEnvironment, ...]:
    """(text, html) environments for one set of partials, kept for reuse."""
    snapshot = dict(partials)
    return make_environment(snapshot, html=False), make_environment(snapshot, html=True)


def referenced_partials(ast: nodes.Template) -> list[str]:
    """Names of the files a template includes, imports or extends (literal names only)."""
    return [name for name in meta.find_referenced_templates(ast) if name is not None]


@dataclass
class Includes:
    """The partials a template pulls in, recursively, parsed."""

    found: dict[str, nodes.Template] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    broken: list[tuple[str, TemplateSyntaxError]] = field(default_factory=list)


def includes(
    env: SandboxedEnvironment, ast: nodes.Template, partials: Mapping[str, str]
) -> Includes:
    """What `ast` pulls in, recursively. A layout it extends is kept without the blocks
    it overrides: what those blocks held (a footer, say) is not in the message."""
    result = Includes()
    overridden = _block_names(ast) if _extends(ast) else set()
    pending = referenced_partials(ast)
    while pending:
        name = pending.pop()
        if name in result.found or name in result.missing:
            continue
        if name not in partials:
            result.missing.append(name)
            continue
        try:
            parsed = env.parse(partials[name])
        except TemplateSyntaxError as err:
            result.broken.append((name, err))
            continue
        for block in parsed.find_all(nodes.Block):
            if block.name in overridden:
                block.body = []
        if _extends(parsed):
            overridden |= _block_names(parsed)
        result.found[name] = parsed
        pending += referenced_partials(parsed)
    return result


def _extends(ast: nodes.Template) -> bool:
    return any(True for _ in ast.find_all(nodes.Extends))


def _block_names(ast: nodes.Template) -> set[str]:
    return {block.name for block in ast.find_all(nodes.Block)}


def reads(ast: nodes.Template) -> list[FieldRef]:
    """Field chains read from the context (loop variables excluded)."""
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
