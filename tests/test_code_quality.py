"""ruff and mypy (strict) are clean: the checks run as part of the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidings.settings import PACKAGE_DIR


def run(*args: str, cwd: Path = PACKAGE_DIR, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_ruff_lint_and_format_are_clean() -> None:
    run("ruff", "check", ".")
    run("ruff", "format", "--check", ".")


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    # The repository root *is* the `tidings` package (package-dir mapping), so
    # mypy needs to see it under that name.
    (tmp_path / "tidings").symlink_to(PACKAGE_DIR)
    paths = [tmp_path, PACKAGE_DIR / "tests", PACKAGE_DIR / "benchmarks"]
    env = {**os.environ, "MYPYPATH": os.pathsep.join(map(str, paths))}
    run(
        "mypy",
        "--config-file",
        str(PACKAGE_DIR / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "-p",
        "tidings",
        cwd=tmp_path,
        env=env,
    )
