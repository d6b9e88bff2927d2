"""Loading journey and template files, reporting every problem by file, line and step.

A journey is accepted only when it is valid on its own and every template it
sends exists and is valid; nothing starts from a catalog with problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tidings.errors import SpecError
from tidings.models.journey import Journey, journey_problems
from tidings.models.policy import PolicyConfig
from tidings.models.template import EmailTemplate, template_problems
from tidings.settings import Settings

SPEC_SUFFIXES = (".yaml", ".yml")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Catalog:
    """The journeys and templates a worker runs and a client routes events to."""

    journeys: Mapping[str, Journey]
    templates: Mapping[str, EmailTemplate]
    journey_files: Mapping[str, Path] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    @classmethod
    def load(
        cls, journeys_dir: Path, templates_dir: Path, policy_file: Path | None = None
    ) -> Catalog:
        policy = load_policy(policy_file) if policy_file is not None else PolicyConfig()
        templates = load_templates(templates_dir)
        paths = spec_files(journeys_dir)
        journeys: dict[str, Journey] = {}
        files: dict[str, Path] = {}
        problems: list[str] = []
        for path in paths:
            try:
                journey = load_journey(path, templates)
            except SpecError as err:
                problems.extend(err.problems)
                continue
            if journey.name in journeys:
                problems.append(
                    f"{path}: journey name {journey.name!r} is also used by "
                    f"{files[journey.name]}; journey names must be unique"
                )
            journeys[journey.name] = journey
            files[journey.name] = path
        if problems:
            raise SpecError(problems)
        return cls(journeys=journeys, templates=templates, journey_files=files, policy=policy)

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls.load(settings.journeys_dir, settings.templates_dir, settings.policy_file)

    def triggered_by(self, event: str) -> list[Journey]:
        return [j for j in self.journeys.values() if j.trigger.event == event]

    def listening_to(self, event: str) -> list[Journey]:
        """Journeys a running entry of which reacts to `event` (trigger excluded)."""
        return [
            j
            for j in self.journeys.values()
            if j.trigger.event != event and event in j.listens_while_running()
        ]


def spec_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SpecError([f"{directory}: no such directory; set the path or create it"])
    return sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES)


def load_templates(directory: Path) -> dict[str, EmailTemplate]:
    templates: dict[str, EmailTemplate] = {}
    problems: list[str] = []
    for path in spec_files(directory):
        try:
            templates[path.stem] = load_template(path)
        except SpecError as err:
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    return templates


def load_policy(path: Path) -> PolicyConfig:
    data, node = _read_yaml(path)
    return _validate(PolicyConfig, data or {}, node, path, label=None)


def load_template(path: Path) -> EmailTemplate:
    data, node = _read_yaml(path)
    if isinstance(data, dict):
        data = {"name": path.stem, **data}
    template = _validate(EmailTemplate, data, node, path, label=None)
    problems = template_problems(template)
    if problems:
        raise SpecError([f"{path}: {p}" for p in problems])
    return template


def load_journey(path: Path, templates: Mapping[str, EmailTemplate]) -> Journey:
    data, node = _read_yaml(path)
    journey = _validate(Journey, data, node, path, label=_step_label)
    problems = journey_problems(journey)
    known = ", ".join(sorted(templates)) or "none"
    for step in journey.sends():
        name = step.send.template
        if name not in templates:
            problems.append(
                f"step {step.id!r}: unknown template {name!r}; known templates: {known} "
                f"(a template is a file templates/<name>.yaml)"
            )
        elif step.send.purpose in ("transactional", "critical") and not (
            step.send.rationale or journey.rationale or templates[name].rationale
        ):
            problems.append(
                f"step {step.id!r}: a {step.send.purpose} send is exempt from marketing "
                "opt-outs only with a recorded legal rationale; add `rationale:` to the "
                f"step, the journey or templates/{name}.yaml"
            )
    if problems:
        lines = _step_lines(data, node)
        raise SpecError([_with_line(path, lines, p) for p in problems])
    return journey


def validate_files(paths: Iterable[Path], templates: Mapping[str, EmailTemplate]) -> list[str]:
    """Problems in the given journey files (an empty list means all are valid)."""
    problems: list[str] = []
    for path in paths:
        try:
            load_journey(path, templates)
        except SpecError as err:
            problems.extend(err.problems)
    return problems


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError([f"{path}: cannot read: {err.strerror}"]) from err
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([f"{where}: invalid YAML: {problem}"]) from err


def _validate(model: type[M], data: Any, node: yaml.Node | None, path: Path, label: Any) -> M:
    if not isinstance(data, dict):
        raise SpecError([f"{path}: expected a mapping of fields at the top level"])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            loc = tuple(error["loc"])
            line = _line_at(node, loc)
            where = f"{path}:{line}" if line else str(path)
            prefix = label(data, loc) if label else ""
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {prefix}{_loc_text(data, loc)}: {message}")
        raise SpecError(problems) from None


def _step_label(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        step = steps[loc[1]] if loc[1] < len(steps) else None
        step_id = step.get("id") if isinstance(step, dict) else None
        return f"step {step_id!r}: " if step_id else f"step #{loc[1] + 1}: "
    return ""


def _loc_text(data: Any, loc: tuple[Any, ...]) -> str:
    """A readable field path, with union tags that are not real keys left out."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        loc = loc[2:]
        data = None
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        elif isinstance(node, dict) and item not in node and parts:
            continue
        else:
            if parts and parts[-1] == f".{item}":
                continue
            parts.append(f".{item}")
            node = node.get(item) if isinstance(node, dict) else None
    text = "".join(parts).lstrip(".")
    return text or "(step)"


def _line_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node along `loc`."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for item in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == item), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            child = node.value[item] if item < len(node.value) else None
        if child is None:
            continue
        node = child
        line = node.start_mark.line + 1
    return line


def _step_lines(data: Any, node: yaml.Node | None) -> dict[str, int]:
    steps = data.get("steps") if isinstance(data, dict) else None
    lines: dict[str, int] = {}
    for index, step in enumerate(steps or []):
        line = _line_at(node, ("steps", index))
        if isinstance(step, dict) and line is not None:
            lines.setdefault(str(step.get("id")), line)
    return lines


def _with_line(path: Path, lines: dict[str, int], problem: str) -> str:
    for step_id, line in lines.items():
        if problem.startswith(f"step {step_id!r}:"):
            return f"{path}:{line}: {problem}"
    return f"{path}: {problem}"
