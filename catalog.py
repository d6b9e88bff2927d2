"""Loading journey and template files, reporting every problem by file, line and step.

A journey is accepted only when it is valid on its own and every template it
sends exists and is valid; nothing starts from a catalog with problems.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tidings.content.files import Brand, TemplateSource, load_library
from tidings.errors import SpecError
from tidings.models.journey import EscalateStep, Journey, journey_problems
from tidings.models.policy import PolicyConfig
from tidings.models.segment import Segment, unknown_segment_problems
from tidings.segment_files import load_segments
from tidings.settings import Settings
from tidings.yamlspec import line_at, read_yaml, validate_yaml

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Catalog:
    """The journeys and templates a worker runs and a client routes events to."""

    journeys: Mapping[str, Journey]
    templates: Mapping[str, TemplateSource]
    """The template files; sends render the versions pushed to the database."""
    journey_files: Mapping[str, Path] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    brand: Brand = field(default_factory=Brand)
    segments: Mapping[str, Segment] = field(default_factory=dict)
    """Named segments journeys' conditions may ask about (`contact.in_segment`)."""

    @classmethod
    def load(
        cls,
        journeys_dir: Path,
        templates_dir: Path,
        policy_file: Path | None = None,
        segments_dir: Path | None = None,
    ) -> Catalog:
        policy = load_policy(policy_file) if policy_file is not None else PolicyConfig()
        library = load_library(templates_dir)
        templates = library.templates
        segments = load_segments(segments_dir) if segments_dir is not None else {}
        paths = spec_files(journeys_dir)
        journeys: dict[str, Journey] = {}
        files: dict[str, Path] = {}
        problems: list[str] = []
        for path in paths:
            try:
                journey = load_journey(path, templates, segments)
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
        return cls(
            journeys=journeys,
            templates=templates,
            journey_files=files,
            policy=policy,
            brand=library.brand,
            segments=segments,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls.load(
            settings.journeys_dir,
            settings.templates_dir,
            settings.policy_file,
            segments_dir=settings.segments_dir,
        )

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


def load_policy(path: Path) -> PolicyConfig:
    data, node = read_yaml(path)
    return validate_yaml(PolicyConfig, data or {}, node, path, label=None)


def load_journey(
    path: Path, templates: Mapping[str, TemplateSource], segments: Collection[str] = ()
) -> Journey:
    """A valid journey; its conditions may name only the given segments."""
    data, node = read_yaml(path)
    journey = validate_yaml(Journey, data, node, path, label=_step_label)
    problems = journey_problems(journey) + unknown_segment_problems(journey, segments)
    known = ", ".join(sorted(templates)) or "none"
    for step in journey.sends():
        name = step.send.template
        if name not in templates:
            problems.append(
                f"step {step.id!r}: unknown template {name!r}; known templates: {known} "
                f"(a template is a file templates/<name>.yaml)"
            )
        elif missing := [
            c
            for c in (step.send.channel, step.send.fallback_channel)
            if c is not None and c not in templates[name].spec.channels()
        ]:
            problems.append(
                f"step {step.id!r}: template {name!r} has no {' or '.join(missing)} variant; "
                f"add `{missing[0]}:` to templates/{name}.yaml or send on "
                f"{' or '.join(templates[name].spec.channels())}"
            )
        elif step.send.purpose in ("transactional", "critical") and not (
            step.send.rationale or journey.rationale or templates[name].spec.rationale
        ):
            problems.append(
                f"step {step.id!r}: a {step.send.purpose} send is exempt from marketing "
                "opt-outs only with a recorded legal rationale; add `rationale:` to the "
                f"step, the journey or templates/{name}.yaml"
            )
    problems += _escalation_template_problems(journey, templates)
    if problems:
        lines = _step_lines(data, node)
        raise SpecError([_with_line(path, lines, p) for p in problems])
    return journey


def _escalation_template_problems(
    journey: Journey, templates: Mapping[str, TemplateSource]
) -> list[str]:
    """Each escalation tier's template exists and can go out on the tier's channel."""
    problems = []
    for step in journey.steps:
        if not isinstance(step, EscalateStep):
            continue
        for number, tier in enumerate(step.escalate.tiers, 1):
            source = templates.get(tier.template)
            if source is None:
                problems.append(
                    f"step {step.id!r}: tier {number}: unknown template {tier.template!r}; "
                    f"known templates: {', '.join(sorted(templates)) or 'none'}"
                )
            elif tier.channel not in source.spec.channels():
                problems.append(
                    f"step {step.id!r}: tier {number}: template {tier.template!r} has no "
                    f"{tier.channel} variant; add `{tier.channel}:` to "
                    f"templates/{tier.template}.yaml"
                )
    return problems


def validate_files(
    paths: Iterable[Path],
    templates: Mapping[str, TemplateSource],
    segments: Collection[str] = (),
) -> list[str]:
    """Problems in the given journey files (an empty list means all are valid)."""
    problems: list[str] = []
    for path in paths:
        try:
            load_journey(path, templates, segments)
        except SpecError as err:
            problems.extend(err.problems)
    return problems


def _step_label(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        step = steps[loc[1]] if loc[1] < len(steps) else None
        step_id = step.get("id") if isinstance(step, dict) else None
        return f"step {step_id!r}: " if step_id else f"step #{loc[1] + 1}: "
    return ""


def _step_lines(data: Any, node: yaml.Node | None) -> dict[str, int]:
    steps = data.get("steps") if isinstance(data, dict) else None
    lines: dict[str, int] = {}
    for index, step in enumerate(steps or []):
        line = line_at(node, ("steps", index))
        if isinstance(step, dict) and line is not None:
            lines.setdefault(str(step.get("id")), line)
    return lines


def _with_line(path: Path, lines: dict[str, int], problem: str) -> str:
    for step_id, line in lines.items():
        if problem.startswith(f"step {step_id!r}:"):
            return f"{path}:{line}: {problem}"
    return f"{path}: {problem}"
