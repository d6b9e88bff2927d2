"""Loading `templates/`: sources, translations, partials and the brand, checked whole.

    templates/welcome.yaml         a source
    templates/welcome.fr.yaml      its French translation (`translates: <version>`)
    templates/_partials/footer.html  included with {% include "footer.html" %}
    templates/_brand.yaml          company, postal address, ... as `brand.*`

Every problem is reported at once, by file and line: syntax errors, reads
of undeclared fields, missing partials, unknown locales, channels a
translation adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jinja2.exceptions import TemplateSyntaxError
from pydantic import BaseModel, ConfigDict

from tidings.content.environment import (
    check_locale,
    includes,
    make_environment,
    reads,
)
from tidings.content.spec import StoredTemplate, TemplateSpec, TranslationSpec, Variants
from tidings.errors import SpecError
from tidings.models.expressions import CONTACT_FIELDS, FieldRef
from tidings.yamlspec import deepest_node, read_yaml, validate_yaml

PARTIALS_DIR = "_partials"
BRAND_FILE = "_brand.yaml"


class Brand(BaseModel):
    """Who sends: shown in templates as `brand.*` (CAN-SPAM and CASL want it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    company: str = "Acme"
    postal_address: str = ""
    website: str = ""
    support_email: str = ""


@dataclass(frozen=True)
class TemplateSource:
    """A template as authored: its source, translations and included partials."""

    name: str
    path: Path
    stored: StoredTemplate
    translations: dict[str, TranslationSpec] = field(default_factory=dict)
    translation_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def spec(self) -> TemplateSpec:
        return self.stored.spec


@dataclass(frozen=True)
class TemplateLibrary:
    templates: dict[str, TemplateSource]
    brand: Brand


def load_library(directory: Path) -> TemplateLibrary:
    if not directory.is_dir():
        raise SpecError([f"{directory}: no such directory; set the path or create it"])
    partials = _read_partials(directory / PARTIALS_DIR)
    brand_path = directory / BRAND_FILE
    brand = Brand()
    if brand_path.is_file():
        data, node = read_yaml(brand_path)
        brand = validate_yaml(Brand, data or {}, node, brand_path)
    problems: list[str] = []
    templates: dict[str, TemplateSource] = {}
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    sources = [p for p in files if not p.name.startswith("_") and "." not in p.stem]
    for path in sources:
        try:
            templates[path.stem] = load_source(path, partials)
        except SpecError as err:
            problems += err.problems
    broken = {path.stem for path in sources} - set(templates)
    for path in (p for p in files if not p.name.startswith("_") and "." in p.stem):
        name, _, locale = path.stem.partition(".")
        if name in broken:
            continue  # its source's problems are reported already
        try:
            translation = load_translation(path, locale, templates.get(name))
        except SpecError as err:
            problems += err.problems
            continue
        if name in templates:
            templates[name].translations[locale] = translation
            templates[name].translation_paths[locale] = path
    if problems:
        # A broken partial is reported by every template that includes it: once is enough.
        raise SpecError(list(dict.fromkeys(problems)))
    return TemplateLibrary(templates=templates, brand=brand)


def load_source(path: Path, partials: dict[str, str]) -> TemplateSource:
    data, node = read_yaml(path)
    spec = validate_yaml(TemplateSpec, data, node, path)
    problems = [f"{path}: fields: {p}" for name in spec.fields for p in declaration_problems(name)]
    try:
        check_locale(spec.source_locale)
    except ValueError as err:
        problems.append(f"{path}: source_locale: {err}")
    used: dict[str, str] = {}
    for where, source, html in _parts(spec):
        problems += _part_problems(path, node, where, source, html, spec, partials, used)
    for name, lookup in spec.lookups.items():
        where = ("lookups", name, "url")
        problems += _part_problems(path, node, where, lookup.url, False, spec, partials, used)
    if problems:
        raise SpecError(problems)
    return TemplateSource(
        name=path.stem, path=path, stored=StoredTemplate(spec=spec, partials=used)
    )


def load_translation(path: Path, locale: str, source: TemplateSource | None) -> TranslationSpec:
    """A translation file, checked on its own: YAML, locale, syntax.

    What it reads is checked when it is pushed, against the source version it
    says it translates (`check_translation`), which may be older than the file.
    """
    data, node = read_yaml(path)
    translation = validate_yaml(TranslationSpec, data, node, path)
    problems = []
    try:
        check_locale(locale)
    except ValueError as err:
        problems.append(f"{path}: the file name's locale: {err}")
    if source is None:
        problems.append(
            f"{path}: translates a template that does not exist: add templates/"
            f"{path.stem.partition('.')[0]}.yaml or rename the file"
        )
    else:
        for where, text, html in _parts(translation):
            problems += _part_problems(
                path, node, where, text, html, None, source.stored.partials, {}
            )
    if problems:
        raise SpecError(problems)
    return translation


def check_translation(path: Path, stored: StoredTemplate) -> TranslationSpec:
    """The translation file, fully checked against the source version it translates."""
    data, node = read_yaml(path)
    translation = validate_yaml(TranslationSpec, data, node, path)
    problems = [
        f"{path}: has a {channel} variant, which version {translation.translates} of the "
        "source does not"
        for channel in sorted(set(translation.channels()) - set(stored.spec.channels()))
    ]
    for where, text, html in _parts(translation):
        problems += _part_problems(
            path, node, where, text, html, stored.spec, stored.partials, dict(stored.partials)
        )
    if problems:
        raise SpecError(problems)
    return translation


def declaration_problems(name: str) -> list[str]:
    parts = name.split(".")
    root = parts[0]
    if root not in ("contact", "event", "trigger"):
        return [f"{name!r} must start with contact, event or trigger"]
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


def _parts(spec: Variants) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """(yaml path, source, is html) for every part of every variant, fallback too."""
    for channel, parts in spec.channels().items():
        for part, source in parts.items():
            yield (channel, part), source, part == "html"
    fallback = getattr(spec, "fallback", None)
    if fallback is not None:
        for channel, parts in fallback.channels().items():
            for part, source in parts.items():
                yield ("fallback", channel, part), source, part == "html"


def _read_partials(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): p.read_text(encoding="utf-8")
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _part_problems(
    path: Path,
    node: yaml.Node | None,
    where: tuple[str, ...],
    source: str,
    html: bool,
    spec: TemplateSpec | None,
    partials: dict[str, str],
    used: dict[str, str],
) -> list[str]:
    """Syntax, includes and reads of one part (and of the partials it includes).

    With no `spec`, only syntax and includes are checked.
    """
    env = make_environment(partials, html=html)
    label = ".".join(where)
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as err:
        return [f"{path}:{_line(node, where, err.lineno)}: {label}: {err.message}"]
    problems: list[str] = []
    found = includes(env, ast, partials)
    problems += [
        f"{path}: {label}: includes {name!r}, which is not in templates/{PARTIALS_DIR}/ "
        f"(there: {', '.join(sorted(partials)) or 'nothing'})"
        for name in found.missing
    ]
    problems += [
        f"{path.parent / PARTIALS_DIR / name}:{err.lineno}: {err.message}"
        for name, err in found.broken
    ]
    used.update({name: partials[name] for name in found.found})
    refs = [ref for parsed in (ast, *found.found.values()) for ref in reads(parsed)]
    if spec is not None:
        problems += [f"{path}: {label}: {problem}" for problem in _read_problems(refs, spec)]
    return problems


def _read_problems(refs: list[FieldRef], spec: TemplateSpec) -> list[str]:
    declared = [tuple(name.split(".")) for name in spec.fields]
    problems = []
    for ref in refs:
        path = (ref.root, *ref.path)
        if ref.root in ("brand", "unsubscribe_url", "_locale", "_timezone"):
            continue
        if ref.root == "lookup":
            if not ref.path or ref.path[0] not in spec.lookups:
                known = ", ".join(spec.lookups) or "none"
                problems.append(f"reads {ref}, but the template declares no such lookup ({known})")
            continue
        if ref.root not in ("contact", "event", "trigger"):
            problems.append(
                f"reads {ref.root!r}, which templates do not have; use contact, event, "
                "trigger, lookup, brand or unsubscribe_url"
            )
            continue
        if not any(path[: len(d)] == d for d in declared):
            problems.append(
                f"uses {ref} but does not declare it; add it under `fields:` "
                f"(e.g. `{_suggest(ref)}: {{default: ...}}` or `: required`)"
            )
    return problems


def _suggest(ref: FieldRef) -> str:
    return ".".join((ref.root, *ref.path[:2]))


def _line(node: yaml.Node | None, where: tuple[str, ...], lineno: int) -> int | str:
    """The file line of line `lineno` of a part (block scalars start on the next line)."""
    value = deepest_node(node, where)
    if value is None:
        return "?"
    block = isinstance(value, yaml.ScalarNode) and value.style in ("|", ">")
    return value.start_mark.line + 1 + lineno - (0 if block else 1)
