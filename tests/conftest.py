"""Fixtures: real Temporal servers (time-skipping and dev), a real SMTP sink, real databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support import Stack, running_stack, start_dev_server, start_time_skipping
from temporalio.testing import WorkflowEnvironment

from tidings.activities.metrics import use_meter_provider
from tidings.db.engine import scratch_schema
from tidings.starter.smtp_sink import SmtpSink

POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping test server per test: a clock of its own."""
    env = await start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server for the session; tests use their own contact keys."""
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "outbox") as sink:
        yield sink


@pytest.fixture
async def stack(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The example journeys on the time-skipping server, SQLite, the SMTP sink."""
    async with running_stack(time_skipping, data_dir=tmp_path / "data", smtp=smtp) as s:
        yield s


@pytest.fixture
def contact_key() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of its own on the local PostgreSQL server, dropped afterwards."""
    with scratch_schema(POSTGRES_URL, "tidings_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database-layer test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """tidings' metrics, recorded into memory for the test."""
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    use_meter_provider(provider)
    yield memory
    use_meter_provider(None)
    provider.shutdown()
