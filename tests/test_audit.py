"""The tamper-evident audit log, on SQLite and on the real PostgreSQL server: every
decision of a journey in one intact chain; `tidings audit verify` catching an edited,
deleted, reordered or forged record; the triggers; exports; racing appends."""

from __future__ import annotations

import csv
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import col, select
from support import run_onboarding, running_stack
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings.db import approvals, audit_chain
from tidings.db.audit_chain import AuditKeyMissingError, Entry, append, seal
from tidings.db.engine import Database
from tidings.models.approvals import GatedMessage, GateState, OpenGateInput, Vote
from tidings.models.events import JourneyEvent
from tidings.models.tables import AuditRecord, Delivery
from tidings.settings import Settings
from tidings.starter.cli import app as cli
from tidings.starter.smtp_sink import SmtpSink

SECRET = "audit-test-secret"
NOW = datetime.now(UTC)
runner = CliRunner()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, audit_key=Settings(secret_key=SECRET).audit_key())
    yield database
    database.dispose()


def tidings(db: Database, tmp_path: Path, *args: str, secret: str = SECRET) -> tuple[int, str]:
    """Run the CLI against `db`; its exit code and everything it printed."""
    env = {
        "TIDINGS_DATABASE_URL": db.url,
        "TIDINGS_DATA_DIR": str(tmp_path / "cli"),
        "TIDINGS_SECRET_KEY": secret,
    }
    result = runner.invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def fill(db: Database, contact_key: str = "c1", count: int = 5) -> datetime:
    """A chain of `count` records an hour apart, ending now (returned), and one system
    record."""
    now = datetime.now(UTC)
    with db.session() as session:
        for n in range(count):
            append(
                session,
                Entry(
                    contact_key=contact_key,
                    kind="policy:send",
                    action="send",
                    rule=f"rule {n + 1}",
                    detail="allowed",
                    journey="onboarding",
                    step_id="welcome",
                    at=now - timedelta(hours=count - 1 - n),
                    data={"n": n + 1, "window": ("09:00", "17:00")},
                ),
            )
        append(session, Entry(contact_key="", kind="hold", action="set", rule="hold 1", at=now))
    return now


def attack(db: Database, *statements: str) -> None:
    """Change the log as a database administrator would: triggers dropped first."""
    drop = {
        "sqlite": [
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        "postgresql": ["DROP TRIGGER audit_log_no_change ON audit_log"],
    }[db.engine.dialect.name]
    with db.engine.begin() as connection:
        for statement in [*drop, *statements]:
            connection.execute(text(statement))


def chain(db: Database, contact_key: str = "c1") -> list[AuditRecord]:
    with db.session() as session:
        query = select(AuditRecord).where(AuditRecord.contact_key == contact_key)
        return list(session.exec(query.order_by(col(AuditRecord.seq))))


# --- a real journey -------------------------------------------------------------------


async def test_a_journey_leaves_every_decision_in_one_intact_chain(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    database_url: str,
    contact_key: str,
) -> None:
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        database_url=database_url,
        extra_settings={"secret_key": SECRET},
    ) as stack:
        await run_onboarding(stack, contact_key)
        timeline = await stack.client.policy.explain(contact_key)
        records = chain(stack.database, contact_key)
        with stack.database.session() as session:
            sent = session.exec(select(Delivery).where(Delivery.contact_key == contact_key)).all()
        code, output = tidings(stack.database, tmp_path, "audit", "verify")
        one_code, one_output = tidings(
            stack.database, tmp_path, "audit", "verify", "--chain", contact_key
        )

    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].prev_hash == audit_chain.GENESIS
    assert all(r.prev_hash == before.hash for before, r in itertools.pairwise(records))
    kinds = [(r.kind, r.action) for r in records]
    assert kinds[0] == ("journey", "entered") and kinds[-1] == ("journey", "exited")
    assert records[-1].rule == "completed"
    assert kinds.count(("policy:planned", "send")) == 3
    assert kinds.count(("policy:send", "send")) == 3
    sends = [r for r in records if r.kind == "send"]
    assert [r.action for r in sends] == ["sent"] * 3
    assert {r.data["delivery_id"] for r in sends} == {d.id for d in sent}
    for record in sends:
        assert record.data["provider"] == "smtp" and record.data["channel"] == "email"
        assert record.data["version"] == 1 and record.data["locale"]
        assert len(record.data["content_sha256"]) == 64
    # Keys, names and digests only: no address, no traits.
    assert "pg@example.com" not in json.dumps([r.model_dump(mode="json") for r in records])
    # explain reads the log's decisions, and takes entries and sends from their tables.
    assert sum("policy (send): allowed" in e.what for e in timeline) == 3
    assert not any(
        "policy (journey)" in e.what or "policy (send): sent" in e.what for e in timeline
    )

    assert code == 0, output
    assert "intact" in output
    assert one_code == 0 and f"{len(records)} records in 1 chains" in one_output


# --- the triggers ---------------------------------------------------------------------


def test_the_log_refuses_updates_and_deletes(db: Database) -> None:
    fill(db)
    statements = ["UPDATE audit_log SET detail = 'nothing to see'", "DELETE FROM audit_log"]
    if db.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with (
            pytest.raises(DBAPIError, match="audit_log is append-only"),
            db.engine.begin() as connection,
        ):
            connection.execute(text(statement))
    assert len(chain(db)) == 5


def test_a_session_without_the_audit_key_cannot_append(database_url: str) -> None:
    database = Database(database_url)
    try:
        with (
            pytest.raises(AuditKeyMissingError, match=r"audit_key=settings\.audit_key"),
            database.session() as session,
        ):
            append(session, Entry(contact_key="c1", kind="k", action="a", rule="r", at=NOW))
    finally:
        database.dispose()


# --- tampering ------------------------------------------------------------------------


def test_verify_passes_an_untouched_log(db: Database, tmp_path: Path) -> None:
    fill(db)
    code, output = tidings(db, tmp_path, "audit", "verify")
    assert code == 0, output
    assert "checked 6 records in 2 chains" in output


def test_verify_finds_an_edited_record(db: Database, tmp_path: Path) -> None:
    fill(db)
    attack(db, "UPDATE audit_log SET detail = 'refused' WHERE contact_key = 'c1' AND seq = 3")
    code, output = tidings(db, tmp_path, "audit", "verify")
    assert code == 1
    [broken] = [line for line in output.splitlines() if line.startswith("  ")]
    assert "chain 'c1' seq 3" in broken
    assert "hash does not match its contents" in broken
    assert "TAMPERED: 1 records" in output


def test_verify_finds_a_deleted_record(db: Database, tmp_path: Path) -> None:
    fill(db)
    attack(db, "DELETE FROM audit_log WHERE contact_key = 'c1' AND seq = 3")
    code, output = tidings(db, tmp_path, "audit", "verify", "--chain", "c1")
    assert code == 1
    [broken] = [line for line in output.splitlines() if line.startswith("  ")]
    assert "seq 4" in broken and "seq 3 missing before it" in broken
    assert "prev_hash does not match the hash of the record before it (seq 2)" in broken
    assert "hash does not match its contents" not in broken


def test_verify_finds_reordered_records(db: Database, tmp_path: Path) -> None:
    fill(db)
    attack(
        db,
        "UPDATE audit_log SET seq = 100 WHERE contact_key = 'c1' AND seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE contact_key = 'c1' AND seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE contact_key = 'c1' AND seq = 100",
    )
    code, output = tidings(db, tmp_path, "audit", "verify")
    broken = [line for line in output.splitlines() if line.startswith("  ")]
    assert code == 1
    assert [line.split(" (")[0] for line in broken] == [
        "  chain 'c1' seq 2",
        "  chain 'c1' seq 3",
        "  chain 'c1' seq 4",
    ]


def test_verify_finds_records_resealed_without_the_key(db: Database, tmp_path: Path) -> None:
    """The attacker rewrites record 2 and reseals the rest of the chain, with a guess."""
    fill(db)
    records = chain(db)
    records[1].detail = "refused"
    statements = []
    previous = records[0].hash
    for record in records[1:]:
        record.prev_hash = previous
        record.hash = previous = seal(b"a guess", record)
        statements.append(
            f"UPDATE audit_log SET detail = '{record.detail}', prev_hash = '{record.prev_hash}', "
            f"hash = '{record.hash}' WHERE id = {record.id}"
        )
    attack(db, *statements)
    code, output = tidings(db, tmp_path, "audit", "verify")
    broken = [line for line in output.splitlines() if line.startswith("  ")]
    assert code == 1
    assert len(broken) == 4 and all("hash does not match its contents" in b for b in broken)
    assert "the secret differs" not in output  # the system chain is still sound


def test_verify_with_another_secret_says_so(db: Database, tmp_path: Path) -> None:
    fill(db)
    code, output = tidings(db, tmp_path, "audit", "verify", secret="another")
    assert code == 1
    assert "TAMPERED: 6 records" in output
    assert "most likely the secret differs" in output


def test_verify_never_makes_up_a_secret(db: Database, tmp_path: Path) -> None:
    fill(db)
    code, output = tidings(db, tmp_path, "audit", "verify", secret="")
    assert code == 1
    assert "error: no secret key: TIDINGS_SECRET_KEY is not set" in output
    assert not (tmp_path / "cli" / "secret.key").exists()


# --- racing appends -------------------------------------------------------------------


def test_a_chain_cannot_fork(db: Database) -> None:
    fill(db, count=1)
    [first] = chain(db)
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(
            AuditRecord(
                at=NOW,
                contact_key="c1",
                seq=1,
                prev_hash=audit_chain.GENESIS,
                hash=first.hash,
                kind="policy:send",
                action="send",
                rule="forked",
            )
        )


def test_racing_appends_to_one_chain_take_turns(db: Database) -> None:
    """The second append waits for the first transaction to end (SQLite: one writer
    at a time; PostgreSQL: the chain's lock), then takes the next place."""

    def entry(rule: str) -> Entry:
        return Entry(contact_key="c1", kind="policy:send", action="send", rule=rule, at=NOW)

    def second() -> None:
        with db.session() as session:
            append(session, entry("second"))

    racer = threading.Thread(target=second)
    with db.session() as session:
        append(session, entry("first"))
        racer.start()
        time.sleep(0.5)
        assert racer.is_alive()  # waiting for the first transaction
    racer.join(timeout=10)

    first, then = chain(db)
    assert [(r.rule, r.seq) for r in (first, then)] == [("first", 1), ("second", 2)]
    assert then.prev_hash == first.hash
    with db.session() as session:
        assert audit_chain.verify(session, db.audit_key or b"").intact


# --- approvals ------------------------------------------------------------------------


def test_votes_and_a_gate_outcome_are_recorded_once(db: Database) -> None:
    event = JourneyEvent(event_id="e1", name="offer", properties={}, occurred_at=NOW)
    opening = OpenGateInput(
        gate_key="journey/offer/c1/1/sign-off/1",
        workflow_id="journey/offer/c1",
        journey="offer",
        journey_version=1,
        step_id="sign-off",
        gated_step="offer",
        contact_key="c1",
        message=GatedMessage(
            template="cart-reminder", version=None, channel="email", purpose="marketing", topic="t"
        ),
        trigger=event,
        event=event,
        roles=["legal"],
        quorum=1,
        order="parallel",
        deadline=NOW + timedelta(days=1),
        now=NOW,
    )
    with db.session() as session:
        gate_id = approvals.open_gate(session=session, opening=opening, preview={}, findings=[]).id
    vote = Vote(user="lena", role="legal", verdict="approve", comment="fine by me", at=NOW)
    state = GateState(
        gate_id=gate_id,
        step_id="sign-off",
        roles=["legal"],
        quorum=1,
        order="parallel",
        eligible={"legal": ["lena"]},
        opened_at=NOW,
        deadline=NOW + timedelta(days=1),
        votes=[vote],
        status="approved",
    )
    for _ in range(2):  # a retried activity records nothing twice
        with db.session() as session:
            approvals.record_state(session=session, gate=state, now=NOW)

    voted, decided = chain(db)
    assert (voted.kind, voted.action, voted.detail) == ("approval", "approve", "lena as legal")
    assert voted.data["gate_id"] == gate_id and voted.data["role"] == "legal"
    assert "fine by me" not in json.dumps(voted.data) and voted.data["comment_sha256"]
    assert (decided.kind, decided.action, decided.data["votes"]) == ("gate", "approved", 1)


# --- exports --------------------------------------------------------------------------


def test_export_since_a_duration_as_jsonl_with_hashes(db: Database, tmp_path: Path) -> None:
    fill(db)
    fill(db, contact_key="c2", count=2)
    code, output = tidings(db, tmp_path, "audit", "export", "--since", "150m", "--contact", "c1")
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines()]
    assert [(r["contact_key"], r["seq"]) for r in lines] == [("c1", 3), ("c1", 4), ("c1", 5)]
    by_seq = {r.seq: r for r in chain(db)}
    for line in lines:
        assert line["hash"] == by_seq[line["seq"]].hash
        assert line["prev_hash"] == by_seq[line["seq"] - 1].hash
    assert lines[0]["data"] == {"n": 3, "window": ["09:00", "17:00"]}


def test_export_between_iso_times_as_csv_to_a_file(db: Database, tmp_path: Path) -> None:
    now = fill(db)
    since = (now - timedelta(hours=3, minutes=30)).isoformat()
    until = (now - timedelta(minutes=30)).isoformat()
    target = tmp_path / "audit.csv"
    code, output = tidings(
        db, tmp_path, "audit", "export", "--since", since, "--until", until,
        "--format", "csv", "--output", str(target),
    )  # fmt: skip
    assert code == 0, output
    assert "3 records written to" in output
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["contact_key"], row["seq"]) for row in rows] == [
        ("c1", "2"),
        ("c1", "3"),
        ("c1", "4"),
    ]
    assert {"prev_hash", "hash", "data"} <= set(rows[0])
    assert json.loads(rows[0]["data"])["n"] == 2


def test_export_refuses_a_moment_it_cannot_read(db: Database, tmp_path: Path) -> None:
    code, output = tidings(db, tmp_path, "audit", "export", "--since", "yesterday")
    assert code == 1
    assert "--since 'yesterday': expected a duration back from now" in output
