"""`tidings import contacts|events`: real files through the real CLI into a real database,
rejected rows reported by row and column, dry runs, interrupted imports resumed, and
imported events routed into a real journey (or deliberately not)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import col, select
from support import Stack, eventually
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner

from tidings import naming
from tidings.connection import connect
from tidings.db.contacts import get_contact, upsert_contact
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.models.contact import ContactView, IdentifyContact
from tidings.models.tables import Contact, EventRecord, ImportRecord
from tidings.settings import Settings
from tidings.starter.cli import app
from tidings.starter.client import TidingsClient
from tidings.starter.importer import ImportOptions, run_import

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The CLI's environment: its own data dir, on SQLite and on PostgreSQL."""
    return {"TIDINGS_DATA_DIR": str(tmp_path / "data"), "TIDINGS_DATABASE_URL": database_url}


def database(env: dict[str, str]) -> Database:
    return Database(env["TIDINGS_DATABASE_URL"])


def contact(env: dict[str, str], key: str) -> ContactView:
    db = database(env)
    try:
        with db.session() as session:
            return get_contact(session=session, key=key)
    finally:
        db.dispose()


def stored_events(env: dict[str, str]) -> list[EventRecord]:
    db = database(env)
    try:
        with db.session() as session:
            return list(session.exec(select(EventRecord).order_by(col(EventRecord.event_id))))
    finally:
        db.dispose()


def identify(env: dict[str, str], key: str, **fields: object) -> None:
    db = database(env)
    try:
        with db.session() as session:
            data = IdentifyContact.model_validate({"key": key, **fields})
            upsert_contact(session=session, data=data, now=datetime.now(UTC))
    finally:
        db.dispose()


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_contacts_csv_imports_its_good_rows_and_names_the_bad_ones(
    tmp_path: Path, env: dict[str, str]
) -> None:
    source = write_csv(
        tmp_path / "crm.csv",
        ["key", "emails", "phones", "timezone", "jurisdiction", "trait.plan", "trait.seats",
         "external.stripe"],
        [
            ["ada", "ada@example.com; Ada.L@Example.com", "+447700900123", "Europe/London",
             "GB", "pro", "12", "cus_42"],
            ["bob", "bob-at-example.com", "", "Mars/Olympus", "", "", "", ""],
            ["cy", "", "", "", "", "free", "", ""],
        ],
    )  # fmt: skip
    rejects = tmp_path / "rejects.csv"

    result = runner.invoke(
        app, ["import", "contacts", str(source), "--rejects", str(rejects)], env=env
    )

    assert result.exit_code == 1, result.output
    assert "row 2, emails: 'bob-at-example.com' is not an email address" in result.stderr
    assert "row 2, timezone: 'Mars/Olympus' is not an IANA time zone" in result.stderr
    assert "3 of 3 rows, 2 accepted, 1 rejected" in result.stdout
    ada = contact(env, "ada")
    assert ada.emails == ["ada@example.com", "ada.l@example.com"]
    assert (ada.phones, ada.timezone, ada.jurisdiction) == (
        ["+447700900123"],
        "Europe/London",
        "GB",
    )
    assert (ada.traits, ada.external_ids) == ({"plan": "pro", "seats": 12}, {"stripe": "cus_42"})
    assert contact(env, "cy").traits == {"plan": "free"}
    [rejected] = list(csv.DictReader(rejects.read_text().splitlines()))
    assert (rejected["key"], rejected["rejected_row"]) == ("bob", "2")
    assert "timezone: 'Mars/Olympus'" in rejected["reason"]

    # The rejects file, fixed, imports like any other file.
    fixed = rejects.read_text().replace("bob-at-example.com", "bob@example.com")
    (tmp_path / "fixed.csv").write_text(fixed.replace("Mars/Olympus", "America/Chicago"))
    again = runner.invoke(app, ["import", "contacts", str(tmp_path / "fixed.csv")], env=env)
    assert again.exit_code == 0, again.output
    bob = contact(env, "bob")
    assert (bob.emails, bob.timezone) == (["bob@example.com"], "America/Chicago")


def test_a_contacts_jsonl_takes_lists_and_a_traits_object(
    tmp_path: Path, env: dict[str, str]
) -> None:
    source = write_jsonl(
        tmp_path / "export.jsonl",
        [
            {"key": "dee", "emails": ["dee@example.com"], "locale": "fr-CA",
             "traits": {"tier": "gold", "vip": True}},
            {"key": "eve", "phones": ["555 0100"], "emial": "eve@example.com"},
            {"key": "fay@example.com"},
            "[1, 2]",
        ],
    )  # fmt: skip

    result = runner.invoke(app, ["import", "contacts", str(source)], env=env)

    assert result.exit_code == 1
    assert "row 2, phones: '555 0100' is not a phone number in international form" in result.stderr
    assert "row 2, emial: is not a column of this kind of file" in result.stderr
    assert "row 3, key: 'fay@example.com' looks like an email" in result.stderr
    assert "row 4: row is not a JSON object" in result.stderr
    assert "4 of 4 rows, 1 accepted, 3 rejected" in result.stdout
    dee = contact(env, "dee")
    assert (dee.locale, dee.traits) == ("fr-CA", {"tier": "gold", "vip": True})


def test_an_unknown_column_refuses_the_whole_file_before_any_row(
    tmp_path: Path, env: dict[str, str]
) -> None:
    source = write_csv(tmp_path / "c.csv", ["key", "email"], [["gus", "gus@example.com"]])

    result = runner.invoke(app, ["import", "contacts", str(source)], env=env)

    assert result.exit_code == 1
    assert result.output.startswith(f"error: {source}: unknown column 'email'. A contacts file")
    db = database(env)
    with db.session() as session:
        assert session.exec(select(Contact)).all() == []
        assert session.exec(select(ImportRecord)).all() == []
    db.dispose()


def test_an_events_csv_names_contacts_by_key_or_identity_and_records_without_routing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    identify(env, "ada", emails=["ada@example.com"])
    source = write_csv(
        tmp_path / "calls.csv",
        ["contact", "event", "occurred_at", "event_id", "prop.total", "prop.note", "properties"],
        [
            ["ada", "callback_requested", "2025-06-01T10:00:00+02:00", "", "149.9", "call 1",
             '{"currency": "EUR"}'],
            ["email:ADA@example.com", "support_call", "2025-06-02T09:00:00Z", "call-2", "",
             "call 2", ""],
            ["nobody", "support_call", "2025-06-03T09:00:00Z", "", "", "", ""],
            ["ada", "support_call", "2025-06-03", "", "", "", ""],
            ["ada", "support_call", "2025-06-04T09:00:00Z", "", "", "", "{oops"],
        ],
    )  # fmt: skip

    result = runner.invoke(app, ["import", "events", str(source)], env=env)

    assert result.exit_code == 1
    assert "row 3, contact: contact 'nobody' is unknown" in result.stderr
    assert "--create-contacts" in result.stderr
    assert "row 4, occurred_at: Input should have timezone info" in result.stderr
    assert "row 5, properties: is not JSON" in result.stderr
    assert "recorded only, not routed into journeys (--route routes them)" in result.stdout
    second, first = stored_events(env)
    assert second.event_id == "call-2" and second.contact_key == "ada"
    assert first.event_id.startswith("import-") and first.event_id.endswith("-1")
    assert first.properties == {"currency": "EUR", "total": 149.9, "note": "call 1"}
    assert first.occurred_at == datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    # Settled as it was recorded: nothing routes a backfill later, not even a live
    # track of the same id.
    assert first.routed_at is not None and second.routed_at is not None


def test_create_contacts_makes_the_contacts_an_events_file_names(
    tmp_path: Path, env: dict[str, str]
) -> None:
    source = write_jsonl(
        tmp_path / "log.jsonl",
        [
            {"contact": "hal", "event": "support_call", "occurred_at": "2025-01-01T00:00:00Z"},
            {"contact": "phone:+14155550123", "event": "support_call",
             "occurred_at": "2025-01-01T00:00:00Z", "properties": {"minutes": 4}},
            {"contact": "phone:+14155550123", "event": "support_call",
             "occurred_at": "2025-01-02T00:00:00Z"},
        ],
    )  # fmt: skip

    result = runner.invoke(app, ["import", "events", str(source), "--create-contacts"], env=env)

    assert result.exit_code == 0, result.output
    assert "2 contacts created" in result.stdout
    events = stored_events(env)
    assert len(events) == 3
    caller = {e.contact_key for e in events} - {"hal"}
    assert len(caller) == 1 and next(iter(caller)).startswith("imported-")
    assert contact(env, next(iter(caller))).phones == ["+14155550123"]


def test_a_dry_run_checks_every_row_and_writes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    identify(env, "ada", emails=["ada@example.com"])
    contacts_file = write_csv(
        tmp_path / "c.csv",
        ["key", "emails"],
        [["ivy", "ivy@example.com"], ["jon", "ada@example.com"], ["kim", "nope"]],
    )
    events_file = write_jsonl(
        tmp_path / "e.jsonl",
        [
            {"contact": "ada", "event": "support_call", "occurred_at": "2025-01-01T00:00:00Z"},
            {"contact": "ivy", "event": "support_call", "occurred_at": "2025-01-01T00:00:00Z"},
        ],
    )

    checked = runner.invoke(app, ["import", "contacts", str(contacts_file), "--dry-run"], env=env)
    events = runner.invoke(app, ["import", "events", str(events_file), "--dry-run"], env=env)

    assert checked.exit_code == 1
    assert "dry run, nothing written: 3 of 3 rows, 1 would be accepted, 2 rejected" in (
        checked.stdout
    )
    # Rehearsed against the database: an address another contact has is caught too.
    assert "row 2: email:ada@example.com already belongs to contact 'ada'" in checked.stderr
    assert "row 3, emails: 'nope' is not an email address" in checked.stderr
    assert "row 2, contact: contact 'ivy' is unknown" in events.stderr
    assert "1 would be accepted, 1 rejected" in events.stdout
    assert stored_events(env) == []
    db = database(env)
    with db.session() as session:
        assert [c.key for c in session.exec(select(Contact))] == ["ada"]
        assert session.exec(select(ImportRecord)).all() == []
    db.dispose()


class Crash(Exception):
    """The importer dying between a row's write and the next checkpoint."""


def crash_after(row: int) -> Callable[[int], None]:
    def on_row(number: int) -> None:
        if number == row:
            raise Crash

    return on_row


async def import_until_crash(env: dict[str, str], options: ImportOptions, row: int) -> None:
    settings = Settings(
        data_dir=Path(env["TIDINGS_DATA_DIR"]), database_url=env["TIDINGS_DATABASE_URL"]
    )
    client = await TidingsClient.connect(settings, temporal=await connect(settings, lazy=True))
    try:
        with pytest.raises(Crash):
            await run_import(client, options, on_row=crash_after(row))
    finally:
        client.close()


def test_an_interrupted_import_continues_after_its_checkpoint_without_duplicates(
    tmp_path: Path, env: dict[str, str]
) -> None:
    identify(env, "ada")
    rows: list[object] = [
        {"contact": "ada", "event": "page_viewed", "occurred_at": f"2025-01-{n:02}T00:00:00Z",
         "properties": {"n": n}}
        for n in range(1, 13)
    ]  # fmt: skip
    rows[2] = {"contact": "ada", "event": "page_viewed"}  # row 3: no occurred_at
    rows[8] = {"contact": "zoe", "event": "page_viewed", "occurred_at": "2025-01-09T00:00:00Z"}
    source = write_jsonl(tmp_path / "views.jsonl", rows)
    rejects = tmp_path / "rejects.jsonl"
    options = ImportOptions(kind="events", path=source, batch_size=5, rejects=rejects)

    # Rows 6 and 7 are recorded, but the crash comes before the checkpoint at row 10.
    asyncio.run(import_until_crash(env, options, row=7))
    assert len(stored_events(env)) == 6  # rows 1-7 but the rejected row 3
    db = database(env)
    with db.session() as session:
        [checkpoint] = session.exec(select(ImportRecord)).all()
    db.dispose()
    assert (checkpoint.rows_done, checkpoint.accepted, checkpoint.rejected) == (5, 4, 1)

    resumed = runner.invoke(
        app,
        ["import", "events", str(source), "--rejects", str(rejects), "--batch-size", "5"],
        env=env,
    )

    assert "continuing the import of" in resumed.stdout and "after row 5 of 12" in resumed.stdout
    assert "12 of 12 rows, 10 accepted (2 recorded before), 2 rejected" in resumed.stdout
    events = stored_events(env)
    assert len(events) == 10
    assert sorted(e.properties["n"] for e in events) == [1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
    # Each rejected row once: row 3 kept from the first run, row 9 from this one.
    assert [json.loads(line)["rejected_row"] for line in rejects.read_text().splitlines()] == [3, 9]

    again = runner.invoke(app, ["import", "events", str(source)], env=env)
    assert "was imported already" in again.stdout and "--restart imports it again" in again.stdout
    restarted = runner.invoke(app, ["import", "events", str(source), "--restart"], env=env)
    assert "12 of 12 rows, 10 accepted (10 recorded before), 2 rejected" in restarted.stdout
    assert len(stored_events(env)) == 10


def test_a_resumed_import_keeps_its_routing_choice(tmp_path: Path, env: dict[str, str]) -> None:
    identify(env, "ada")
    source = write_jsonl(
        tmp_path / "e.jsonl",
        [{"contact": "ada", "event": "page_viewed", "occurred_at": "2025-01-01T00:00:00Z"}] * 3,
    )
    asyncio.run(
        import_until_crash(env, ImportOptions(kind="events", path=source, batch_size=1), row=2)
    )

    async def resume_routed() -> None:
        settings = Settings(
            data_dir=Path(env["TIDINGS_DATA_DIR"]), database_url=env["TIDINGS_DATABASE_URL"]
        )
        client = await TidingsClient.connect(settings, temporal=await connect(settings, lazy=True))
        try:
            await run_import(client, ImportOptions(kind="events", path=source, route=True))
        finally:
            client.close()

    with pytest.raises(InputError, match=r"began with --no-route and stopped after row 1; "):
        asyncio.run(resume_routed())


async def import_via_cli(stack: Stack, *args: str) -> tuple[int, str]:
    """The real `tidings` command in its own process, on the stack's servers."""
    environment = {
        **os.environ,
        "TIDINGS_DATA_DIR": str(stack.settings.data_dir),
        "TEMPORAL_ADDRESS": stack.temporal.service_client.config.target_host,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.starter.cli", "import", *args,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def has_workflow(stack: Stack, journey: str, key: str) -> bool:
    try:
        await stack.temporal.get_workflow_handle(
            naming.journey_workflow_id(journey, key)
        ).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_imported_events_start_journeys_with_route_and_only_then(
    stack: Stack, tmp_path: Path
) -> None:
    people = write_csv(
        tmp_path / "people.csv",
        ["key", "emails", "jurisdiction"],
        [["routed", "routed@example.com", "US"], ["backfilled", "old@example.com", "US"]],
    )
    signups = {
        key: write_jsonl(
            tmp_path / f"{key}.jsonl",
            [
                {
                    "contact": key,
                    "event": "signed_up",
                    "occurred_at": "2025-03-01T12:00:00Z",
                    "properties": {"plan": "pro"},
                }
            ],
        )
        for key in ("routed", "backfilled")
    }

    assert (await import_via_cli(stack, "contacts", str(people)))[0] == 0
    backfill = await import_via_cli(stack, "events", str(signups["backfilled"]))
    routed = await import_via_cli(stack, "events", str(signups["routed"]), "--route")

    assert backfill[0] == 0 and "recorded only" in backfill[1]
    assert routed[0] == 0 and "routed into journeys" in routed[1]
    welcome = await eventually(lambda: asyncio.to_thread(stack.sent, "routed@example.com"))
    assert [(s.journey, s.step_id) for s in welcome] == [("onboarding", "welcome")]
    assert not await has_workflow(stack, "onboarding", "backfilled")
    assert stack.sent("old@example.com") == []
    assert stack.journey_runs("backfilled") == []
