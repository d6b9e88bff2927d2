"""The chaos run as a test, on demand only (minutes long): `pytest -m chaos tests/test_chaos.py`.

The default run leaves it out (pyproject's addopts: `-m 'not chaos'`). The
scenario and its checks are benchmarks/chaos.py's: 1,000 journeys with timers
and sends, the worker SIGKILLed every 10 s, the dev server restarted once;
every journey completes and every email reaches the SMTP server exactly once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tidings.settings import PACKAGE_DIR

sys.path.insert(0, str(PACKAGE_DIR / "benchmarks"))

import chaos


@pytest.mark.chaos
@pytest.mark.timeout(3_600)
async def test_journeys_complete_and_emails_arrive_once_while_the_worker_is_killed(
    tmp_path: Path,
) -> None:
    report = await chaos.run(chaos.Options(), tmp_path)

    shown = json.dumps(
        {key: report[key] for key in ("seconds", "worker", "journeys", "deliveries", "smtp")},
        indent=2,
    )
    assert report["problems"] == [], shown
    assert report["worker"]["sigkills"] > 0
