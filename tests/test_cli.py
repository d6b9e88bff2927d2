"""The CLI's own behaviour: argument parsing, exit codes, messages (no server needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import EXAMPLE_JOURNEYS, EXAMPLE_TEMPLATES
from typer.testing import CliRunner

from tidings.errors import InputError
from tidings.starter.cli import app
from tidings.starter.cli_support import parse_pairs
from tidings.starter.smtp_sink import SmtpSink

runner = CliRunner()


def test_pairs_are_parsed_as_json_when_they_read_as_json() -> None:
    assert parse_pairs("--prop", ["total=25", "vip=true", "zip=02134", "name=Ada", 'id="7"']) == {
        "total": 25,
        "vip": True,
        "zip": "02134",
        "name": "Ada",
        "id": "7",
    }


@pytest.mark.parametrize("pair", ["total", "=3"])
def test_a_pair_without_a_key_or_equals_sign_is_refused(pair: str) -> None:
    with pytest.raises(InputError, match=r"expected KEY=VALUE, e.g. --prop plan=pro"):
        parse_pairs("--prop", [pair])


def test_track_with_a_malformed_prop_exits_1_with_one_message() -> None:
    result = runner.invoke(app, ["track", "c1", "signed_up", "--prop", "plan"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --prop 'plan': expected KEY=VALUE, e.g. --prop plan=pro"
    )


def test_journeys_validate_accepts_the_examples() -> None:
    paths = sorted(str(p) for p in EXAMPLE_JOURNEYS.glob("*.yaml"))
    result = runner.invoke(app, ["journeys", "validate", *paths])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(paths)


def test_journeys_validate_reports_each_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (EXAMPLE_JOURNEYS / "onboarding.yaml")
        .read_text()
        .replace("template: welcome", "template: welcom")
    )
    result = runner.invoke(app, ["journeys", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"error: {bad}:" in result.output
    assert "step 'welcome': unknown template 'welcom'" in result.output


def test_journeys_list_shows_name_version_trigger_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_JOURNEYS_DIR", str(EXAMPLE_JOURNEYS))
    monkeypatch.setenv("TIDINGS_TEMPLATES_DIR", str(EXAMPLE_TEMPLATES))
    result = runner.invoke(app, ["journeys", "list"])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith("cart-abandonment"))
    assert "v1" in line and "on cart_updated where properties.total > 20" in line


def test_outbox_prints_what_the_dev_smtp_server_kept(tmp_path: Path) -> None:
    import smtplib
    from email.message import EmailMessage

    with SmtpSink(tmp_path / "outbox") as sink:
        for to in ("a@example.com", "b@example.com"):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "x@example.com", to, f"hi {to}"
            message.set_content("hello")
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.send_message(message)

    table = runner.invoke(app, ["outbox", "--data-dir", str(tmp_path)])
    only_b = runner.invoke(
        app, ["outbox", "--data-dir", str(tmp_path), "--to", "b@example.com", "--json"]
    )

    assert table.exit_code == 0 and "hi a@example.com" in table.output
    [message] = json.loads(only_b.output)
    assert (message["to"], message["subject"], message["text"]) == (
        "b@example.com",
        "hi b@example.com",
        "hello\n",
    )


def test_an_empty_outbox_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["outbox", "--data-dir", str(tmp_path)])
    assert result.output.strip() == "the outbox is empty"


def test_consent_commands_work_on_the_database_alone(tmp_path: Path) -> None:
    env = {"TIDINGS_DATA_DIR": str(tmp_path)}
    from tidings.db.contacts import upsert_contact
    from tidings.db.engine import Database
    from tidings.models.contact import IdentifyContact
    from tidings.settings import Settings

    database = Database(Settings(data_dir=tmp_path).database_url)
    with database.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(key="c1", phones=["+15125550100"], jurisdiction="US-FL"),
            now=datetime.now(UTC),
        )
    database.dispose()

    granted = runner.invoke(
        app,
        [
            "consent",
            "grant",
            "c1",
            "--channel",
            "sms",
            "--basis",
            "express_written",
            "--proof",
            "form=checkout",
            "--proof",
            "text=Text me deals",
        ],
        env=env,
    )
    stopped = runner.invoke(app, ["inbound-sms", "+1 512-555-0100", "Stop"], env=env)
    shown = runner.invoke(app, ["consent", "show", "c1"], env=env)
    missing = runner.invoke(
        app, ["consent", "grant", "c1", "--channel", "sms", "--basis", "express"], env=env
    )

    assert granted.exit_code == 0, granted.output
    assert "granted sms/marketing/all (express_written), entry 1" in granted.output
    assert "STOP from c1" in stopped.output and "reply: You are unsubscribed" in stopped.output
    assert "US TCPA, CAN-SPAM, Florida FTSA" in shown.output
    assert "sms/all/all: revoked since" in shown.output
    assert missing.exit_code == 1
    assert "express consent needs proof" in missing.output
