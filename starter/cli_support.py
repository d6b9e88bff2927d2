"""What the `tidings` commands share: options, settings, error handling, parsing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import JsonValue, TypeAdapter, ValidationError
from sqlmodel import Session

from tidings.db.engine import Database
from tidings.errors import InputError, SpecError, TidingsError
from tidings.models.primitives import PositiveDuration
from tidings.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

_DURATION: TypeAdapter[timedelta] = TypeAdapter(PositiveDuration)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="TIDINGS_DATA_DIR",
        help="Where the embedded defaults keep their files.",
        show_default=".tidings",
    ),
]


def settings_for(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()


def in_session(settings: Settings, work: Callable[[Session], R]) -> R:
    """One piece of work in one session of the app database, for commands that need
    the database alone (no Temporal), which is opened for it and closed after."""
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            return work(session)
    finally:
        database.dispose()


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an error the user caused into one readable message and exit status 1."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SpecError as err:
            for problem in err.problems:
                typer.echo(f"error: {problem}", err=True)
            raise typer.Exit(1) from None
        except TidingsError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def parse_pairs(option: str, pairs: list[str]) -> dict[str, JsonValue]:
    """`k=v` pairs; a value that reads as JSON (25, true, null, "007") is taken as JSON."""
    parsed: dict[str, JsonValue] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise InputError(f"{option} {pair!r}: expected KEY=VALUE, e.g. {option} plan=pro")
        try:
            value: JsonValue = json.loads(raw)
        except ValueError:
            value = raw
        parsed[name] = value
    return parsed


def parse_duration_option(option: str, value: str) -> timedelta:
    """A positive duration as the journey files write them (90m, 24h, 7d, 1w)."""
    try:
        return _DURATION.validate_python(value)
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(f"{option} {value!r}: {reason}") from None


def parse_moment_option(option: str, value: str, *, now: datetime) -> datetime:
    """A moment given as a duration back from `now` (24h, 7d) or as an ISO date or
    time (UTC unless it names an offset)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            return now - parse_duration_option(option, value)
        except InputError:
            raise InputError(
                f"{option} {value!r}: expected a duration back from now (90m, 24h, 7d) "
                "or an ISO date or time (2026-11-23, 2026-11-23T12:00Z)"
            ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))
