"""Import files on disk: CSV and JSON Lines, hashed, read row by row with their numbers,
and their rejected rows written back in the same format to be fixed and imported again.

Row numbers are what a person finds in the file: in JSON Lines row N is line N (blank
lines are skipped but keep their number); in CSV row N is the Nth record after the
header line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

from tidings.errors import InputError

FileFormat = Literal["csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = ("csv", "jsonl")
_EXTENSIONS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

REJECTED_ROW = "rejected_row"
REASON = "reason"
REJECT_COLUMNS = (REJECTED_ROW, REASON)
"""Added to each row of a rejects file, and ignored when a file is imported: a fixed
rejects file imports like any other."""
# CSV files from spreadsheets often start with a byte order mark: utf-8-sig drops it.
_CSV_ENCODING = "utf-8-sig"


def file_format(path: Path, given: str | None) -> FileFormat:
    """The format `--format` names, else the one the file's extension says."""
    if given is not None:
        if given not in FORMATS:
            raise InputError(f"--format {given!r}: use csv or jsonl")
        return "csv" if given == "csv" else "jsonl"
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"cannot tell the format of {path} from its extension; name the file .csv or "
            ".jsonl, or pass --format csv or --format jsonl"
        )
    return found


@dataclass(frozen=True)
class FileSurvey:
    """What is known of a file before anything in it is imported."""

    content_hash: str
    """SHA-256 of its bytes: the import's identity, whatever the file is called."""
    rows: int
    columns: list[str] = field(default_factory=list)
    """CSV: the header's columns (rejects columns left out); JSON Lines: none."""


def survey(path: Path, fmt: FileFormat) -> FileSurvey:
    """Hash the file and count its rows; a file that cannot be read at all is refused
    here, before anything is written."""
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass the path of a .csv or .jsonl file")
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            digest.update(chunk)
    try:
        if fmt == "csv":
            columns = _csv_header(path)
            with path.open(encoding=_CSV_ENCODING, newline="") as text:
                rows = sum(1 for _ in csv.reader(text)) - 1
            return FileSurvey(digest.hexdigest(), max(rows, 0), columns)
        with path.open(encoding="utf-8") as text:
            rows = sum(1 for _ in text)
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text ({err}); export it as UTF-8") from None
    except csv.Error as err:
        raise InputError(f"{path} is not readable as CSV: {err}") from None
    return FileSurvey(digest.hexdigest(), rows)


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding=_CSV_ENCODING, newline="") as text:
        header = next(csv.reader(text), None)
    if not header or not any(name.strip() for name in header):
        raise InputError(f"{path} has no header row; its first line names the columns")
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{path}: the header names {', '.join(repeated)} more than once")
    return [name for name in names if name not in REJECT_COLUMNS]


@dataclass(frozen=True)
class SourceRow:
    """One row as read: its values by column, or why it could not be read."""

    number: int
    values: dict[str, Any]
    unreadable: str | None = None
    original: dict[str, Any] | str = ""
    """What the rejects file gets back: the CSV cells or JSON object, or the raw line."""


def read_rows(path: Path, fmt: FileFormat, *, after: int = 0) -> Iterator[SourceRow]:
    """The rows numbered above `after`, in file order."""
    return _csv_rows(path, after) if fmt == "csv" else _jsonl_rows(path, after)


def _csv_rows(path: Path, after: int) -> Iterator[SourceRow]:
    with path.open(encoding=_CSV_ENCODING, newline="") as text:
        reader = csv.reader(text)
        header = [name.strip() for name in next(reader, [])]
        for number, cells in enumerate(reader, 1):
            if number <= after:
                continue
            original = dict(zip(header, cells, strict=False))
            values = {k: v for k, v in original.items() if k not in REJECT_COLUMNS}
            if len(cells) > len(header):
                yield SourceRow(
                    number,
                    values,
                    f"has {len(cells)} cells and the header {len(header)} columns "
                    "(a comma inside a value needs the value in double quotes)",
                    original,
                )
            else:
                yield SourceRow(number, values, original=original)


def _jsonl_rows(path: Path, after: int) -> Iterator[SourceRow]:
    with path.open(encoding="utf-8") as text:
        for number, line in enumerate(text, 1):
            if number <= after or not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except ValueError as err:
                yield SourceRow(number, {}, f"is not valid JSON ({err})", line.rstrip("\n"))
                continue
            if not isinstance(parsed, dict):
                yield SourceRow(
                    number, {}, "is not a JSON object ({...} on one line)", line.rstrip("\n")
                )
                continue
            values = {k: v for k, v in parsed.items() if k not in REJECT_COLUMNS}
            yield SourceRow(number, values, original=parsed)


class RejectsFile:
    """The rejected rows, in the input's format, each with its row number and reason.

    A resumed import keeps the rejects of the rows it had settled (up to `kept_up_to`)
    and appends the rest, so the file lists every rejected row once."""

    def __init__(
        self, path: Path, fmt: FileFormat, columns: list[str], *, kept_up_to: int = 0
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.columns = [*columns, *REJECT_COLUMNS]
        kept = _earlier_rejects(path, fmt, kept_up_to) if kept_up_to else []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("w", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._file, self.columns, extrasaction="ignore")
        if fmt == "csv":
            self._csv.writeheader()
        for row in kept:
            self._write(row)

    def add(self, row: SourceRow, reason: str) -> None:
        base = row.original if isinstance(row.original, dict) else {"line": row.original}
        self._write({**base, REJECTED_ROW: row.number, REASON: reason})

    def _write(self, row: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self._csv.writerow(row)
        else:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _earlier_rejects(path: Path, fmt: FileFormat, up_to: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as text:
        if fmt == "csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(text))
        else:
            rows = [json.loads(line) for line in text if line.strip()]
    return [row for row in rows if int(row.get(REJECTED_ROW) or 0) <= up_to]
