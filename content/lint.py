"""Compliance lint: prohibited phrases, required disclosures, sensitive data.

Rules are data (`compliance.yaml`). They are checked twice:

- on submit for review, over the authored source of every part (and the
  partials it includes), for every market the company sends to; an error
  blocks the submission, so nothing unlinted can be approved;
- at send, over what was rendered for one recipient, with the recipient's
  jurisdiction and the send's purpose; an error stops that send. This is
  where data (an event property holding a card number) gets caught.

A required disclosure is either text (`pattern`, e.g. "reply STOP") or a
value the template must show (`shows: brand.postal_address`): in the source
that means the part reads it; in what was rendered, that the value is there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from markupsafe import escape
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tidings.content.environment import environments, includes, reads
from tidings.content.spec import StoredTemplate, Variants
from tidings.models.primitives import Purpose
from tidings.yamlspec import read_yaml, validate_yaml

Severity = Literal["error", "warning"]
SensitiveKind = Literal["card_number", "national_id", "diagnosis_code"]

BODY_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("text", "html"),
    "sms": ("text",),
    "push": ("body",),
    "chat": ("text",),
    "in_app": ("body",),
}
"""Where disclosures must appear: every complete rendering of the message body."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression: {err}") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requirement(_Model):
    pattern: Regex | None = None
    """Text that must appear (case-insensitive)."""
    shows: Literal["unsubscribe_url", "brand.postal_address", "brand.company"] | None = None
    """A value that must appear."""

    @model_validator(mode="after")
    def _one(self) -> Requirement:
        if (self.pattern is None) == (self.shows is None):
            raise ValueError("give exactly one of `pattern` or `shows`")
        return self


class Rule(_Model):
    id: str = Field(min_length=1)
    message: str = Field(min_length=1)
    """What is wrong and how to fix it, shown with every finding."""
    severity: Severity = "error"
    industries: list[str] = []
    jurisdictions: list[str] = []
    """Country codes (US) or regions (US-CA); empty means everywhere."""
    purposes: list[Purpose] = []
    channels: list[Literal["email", "sms", "push", "chat", "in_app"]] = []
    locales: list[str] = []
    """Language tags the rule applies to (fr matches fr-CA); empty means all."""
    prohibit: Regex | None = None
    require: Requirement | None = None
    sensitive: SensitiveKind | None = None

    @model_validator(mode="after")
    def _one_check(self) -> Rule:
        given = [self.prohibit is not None, self.require is not None, self.sensitive is not None]
        if sum(given) != 1:
            raise ValueError(f"rule {self.id!r}: give exactly one of prohibit, require, sensitive")
        return self


class ComplianceConfig(_Model):
    industries: list[str] = []
    """The company's industries: rules for other industries are not checked."""
    markets: list[str] = []
    """Where the company sends; a submitted version is checked against all of them."""
    rules: list[Rule] = []


def load_compliance(path: Path) -> ComplianceConfig:
    data, node = read_yaml(path)
    return validate_yaml(ComplianceConfig, data or {}, node, path)


class Finding(BaseModel):
    rule: str
    severity: Severity
    message: str
    locale: str
    where: str
    """channel.part, or the partial's file."""
    line: int | None = None
    """1-based line within the part; None for a disclosure that is missing."""
    excerpt: str = ""

    def __str__(self) -> str:
        line = f" line {self.line}" if self.line else ""
        found = f" ({self.excerpt!r})" if self.excerpt else ""
        place = f"[{self.locale}] {self.where}{line}{found}"
        return f"{self.severity}: {self.rule} {place}: {self.message}"


@dataclass(frozen=True)
class Part:
    """One piece of text to lint."""

    channel: str
    """email, sms, ...; `partial` for an included file."""
    part: str
    text: str
    label: str = ""
    """Where it is, for findings (fallback.email.text); channel.part by default."""
    included: str = ""
    """Text of the partials it includes: counts for required patterns, is linted apart."""
    shows: frozenset[str] = frozenset()
    """In source, the names it (and its partials) read."""


def source_parts(variants: Variants, partials: Mapping[str, str]) -> list[Part]:
    """The authored parts of a version or translation (fallback too), and its partials."""
    text_env, html_env = environments(tuple(sorted(partials.items())))
    found: list[Part] = []
    used: set[str] = set()
    sets = [("", variants)]
    fallback = getattr(variants, "fallback", None)
    if fallback is not None:
        sets.append(("fallback.", fallback))
    for prefix, variant_set in sets:
        for channel, sources in variant_set.channels().items():
            for part, source in sources.items():
                env = html_env if part == "html" else text_env
                ast = env.parse(source)
                pulled = includes(env, ast, partials).found
                used.update(pulled)
                names = {
                    ".".join((ref.root, *ref.path))
                    for parsed in (ast, *pulled.values())
                    for ref in reads(parsed)
                }
                found.append(
                    Part(
                        channel=channel,
                        part=part,
                        text=source,
                        label=f"{prefix}{channel}.{part}",
                        included="\n".join(partials[name] for name in sorted(pulled)),
                        shows=frozenset(names),
                    )
                )
    found += [
        Part(channel="partial", part=name, text=partials[name], label=f"_partials/{name}")
        for name in sorted(used)
    ]
    return found


def review_findings(
    config: ComplianceConfig, stored: StoredTemplate, content: Variants, locale: str
) -> list[Finding]:
    """Review lint of a version's source (or a translation of it), for every market.

    A template that declares no purpose may be sent as marketing: it is
    checked as such.
    """
    scope = Scope(
        locale=locale, purposes=[stored.spec.purpose or "marketing"], jurisdictions=config.markets
    )
    return lint(config, source_parts(content, stored.partials), scope)


def rendered_parts(channel: str, parts: Mapping[str, str]) -> list[Part]:
    return [Part(channel=channel, part=name, text=text) for name, text in parts.items()]


@dataclass(frozen=True)
class Scope:
    locale: str
    purposes: Sequence[str]
    jurisdictions: Sequence[str]
    """Empty: no rule is limited by jurisdiction (apply them all)."""


def lint(
    config: ComplianceConfig,
    parts: Iterable[Part],
    scope: Scope,
    *,
    values: dict[str, str] | None = None,
) -> list[Finding]:
    """Findings over `parts`. With `values` (rendered output), `shows` checks for the
    values themselves (the actual unsubscribe URL, the brand's address)."""
    findings: list[Finding] = []
    parts = list(parts)
    for rule in config.rules:
        if not _applies(rule, config, scope):
            continue
        for part in parts:
            if rule.channels and part.channel not in rule.channels:
                continue
            findings += _check(rule, part, scope.locale, values)
    return findings


def _applies(rule: Rule, config: ComplianceConfig, scope: Scope) -> bool:
    if rule.industries and not set(rule.industries) & set(config.industries):
        return False
    if rule.purposes and not set(rule.purposes) & set(scope.purposes):
        return False
    if rule.locales and not any(_within(scope.locale, tag) for tag in rule.locales):
        return False
    return not (
        rule.jurisdictions
        and scope.jurisdictions
        and not any(_within(j, r) for j in scope.jurisdictions for r in rule.jurisdictions)
    )


def _within(tag: str, prefix: str) -> bool:
    """fr-CA is within fr; US-CA within US; case-insensitive."""
    tag, prefix = tag.lower(), prefix.lower()
    return tag == prefix or tag.startswith(prefix + "-")


def _check(rule: Rule, part: Part, locale: str, values: dict[str, str] | None) -> list[Finding]:
    where = part.label or f"{part.channel}.{part.part}"

    def finding(line: int | None = None, excerpt: str = "") -> Finding:
        return Finding(
            rule=rule.id,
            severity=rule.severity,
            message=rule.message,
            locale=locale,
            where=where,
            line=line,
            excerpt=excerpt,
        )

    if rule.prohibit is not None:
        return [
            finding(_line(part.text, m.start()), m.group(0))
            for m in re.finditer(rule.prohibit, part.text, re.IGNORECASE)
        ]
    if rule.sensitive is not None:
        return [
            finding(_line(part.text, start), _redact(found))
            for start, found in DETECTORS[rule.sensitive](part.text)
        ]
    assert rule.require is not None
    if part.part not in BODY_PARTS.get(part.channel, ()):
        return []
    if rule.require.pattern is not None:
        # Tags are not text a reader sees: {% include "stop.txt" %} does not say STOP.
        text = _TAGS.sub(" ", f"{part.text}\n{part.included}")
        present = re.search(rule.require.pattern, text, re.IGNORECASE) is not None
    elif values is None:
        present = rule.require.shows in part.shows
    else:
        value = values.get(rule.require.shows or "", "")
        # HTML shows "Smith &amp; Co" for "Smith & Co".
        present = bool(value) and (value in part.text or str(escape(value)) in part.text)
    return [] if present else [finding()]


_TAGS = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _redact(found: str) -> str:
    """Enough to find it, not enough to leak it again in a report."""
    digits = [c for c in found if c.isalnum()]
    return f"…{''.join(digits[-4:])}" if len(digits) > 6 else "…"


Detector = Callable[[str], list[tuple[int, str]]]
"""A sensitive-data detector: (offset, match) for each hit."""

_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_ICD10 = re.compile(r"\b[A-Z]\d[0-9AB]\.[0-9A-Z]{1,4}\b")
"""ICD-10 with its dot (E11.9, F32.A): without the dot, too many product codes look alike."""


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _cards(text: str) -> list[tuple[int, str]]:
    found = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits) and len(set(digits)) > 1:
            found.append((match.start(), match.group(0)))
    return found


def _matches(regex: re.Pattern[str]) -> Detector:
    return lambda text: [(m.start(), m.group(0)) for m in regex.finditer(text)]


DETECTORS: dict[str, Detector] = {
    "card_number": _cards,
    "national_id": lambda text: _matches(_SSN)(text) + _matches(_NINO)(text),
    "diagnosis_code": _matches(_ICD10),
}
