"""Loading segment files (`segments/<name>.yaml`), reporting every problem by file and line.

Each problem names the file, the field and the fix; a folder with any problem
loads nothing, like the journeys that may name its segments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tidings.errors import SpecError
from tidings.models.segment import EventCondition, Segment
from tidings.yamlspec import line_at, loc_text, read_yaml

SPEC_SUFFIXES = (".yaml", ".yml")

_MISSING_HINTS = {
    "name": "the segment's name, the file's name without .yaml, e.g. `name: at-risk`",
    "owner": "who maintains it, e.g. `owner: lifecycle-team`",
    "description": "what the segment is for, in a sentence",
    "within": "the window events are counted over, e.g. `within: 30d`",
}


def load_segments(directory: Path) -> dict[str, Segment]:
    """Every segment in `directory`, by name; SpecError lists every problem found."""
    if not directory.is_dir():
        raise SpecError([f"{directory}: no such directory; set TIDINGS_SEGMENTS_DIR or create it"])
    segments: dict[str, Segment] = {}
    problems: list[str] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in SPEC_SUFFIXES):
        try:
            segment = load_segment(path)
        except SpecError as err:
            problems.extend(err.problems)
            continue
        if segment.name in segments:
            problems.append(
                f"{path}: segment {segment.name!r} is defined twice; keep one file per segment"
            )
        segments[segment.name] = segment
    if problems:
        raise SpecError(problems)
    return segments


def load_segment(path: Path) -> Segment:
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(
            [f"{path}: expected a mapping of fields (name, owner, description, where, events)"]
        )
    try:
        segment = Segment.model_validate(data)
    except ValidationError as err:
        found = sorted(_problem(path, data, node, error) for error in err.errors())
        raise SpecError([problem for _, problem in found]) from None
    if segment.name != path.stem:
        line = line_at(node, ("name",))
        raise SpecError(
            [
                f"{path}:{line}: name: {segment.name!r} differs from the file's name; "
                f"rename the file to {segment.name}{path.suffix} or the segment to {path.stem!r}"
            ]
        )
    return segment


def segment_file(directory: Path, name: str) -> Path | None:
    """The file that defines segment `name`, if there is one."""
    found = [directory / f"{name}{suffix}" for suffix in SPEC_SUFFIXES]
    return next((path for path in found if path.is_file()), None)


def _problem(
    path: Path, data: dict[str, Any], node: yaml.Node | None, error: ErrorDetails
) -> tuple[int, str]:
    """(line, problem): problems are listed in the order of the file."""
    loc = tuple(error["loc"])
    line = line_at(node, loc)
    return line or 0, _text(path, data, loc, line, error)


def _text(
    path: Path, data: dict[str, Any], loc: tuple[Any, ...], line: int | None, error: ErrorDetails
) -> str:
    where = f"{path}:{line}" if line else str(path)
    field = f"{loc_text(data, loc)}: " if loc else ""
    if error["type"] == "extra_forbidden":
        model: type[BaseModel] = EventCondition if loc[:1] == ("events",) else Segment
        known = ", ".join(model.model_fields)
        return f"{where}: {field}unknown field; the fields here are: {known} (check the spelling)"
    if error["type"] == "missing":
        # loc_text leaves out keys the file lacks, and a missing key is one.
        parent = loc_text(data, loc[:-1]) if len(loc) > 1 else ""
        name = str(loc[-1])
        hint = _MISSING_HINTS.get(name, f"`{name}:`")
        return f"{where}: {parent + '.' if parent else ''}{name}: required; add {hint}"
    return f"{where}: {field}{error['msg'].removeprefix('Value error, ')}"
