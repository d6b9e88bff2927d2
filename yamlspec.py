"""Reading YAML spec files into pydantic models, with file:line in every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tidings.errors import SpecError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
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


def validate_yaml(
    model: type[M], data: Any, node: yaml.Node | None, path: Path, label: Any = None
) -> M:
    if not isinstance(data, dict):
        raise SpecError([f"{path}: expected a mapping of fields at the top level"])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            loc = tuple(error["loc"])
            line = line_at(node, loc)
            where = f"{path}:{line}" if line else str(path)
            prefix = label(data, loc) if label else ""
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {prefix}{loc_text(data, loc)}: {message}")
        raise SpecError(problems) from None


def loc_text(data: Any, loc: tuple[Any, ...]) -> str:
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


def deepest_node(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node found along `loc` (keys that are missing are skipped)."""
    for item in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == item), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            child = node.value[item] if item < len(node.value) else None
        if child is not None:
            node = child
    return node


def line_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node along `loc`."""
    found = deepest_node(node, loc)
    return None if found is None else found.start_mark.line + 1
