"""Escalation trees on the time-skipping server: the payment-failed example journey.

Three reminders go out two days apart; two days after the last one the
`follow-up` step escalates: account managers (4h), then the team lead (4h),
then on-call by chat (1h), until someone acknowledges or the payment goes
through.
"""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import JsonValue
from support import EXAMPLE_TEMPLATES, Stack, activity_env, eventually, publish, running_stack
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings import naming
from tidings.activities.channels.smtp import SmtpConfig, SmtpProvider
from tidings.activities.escalations import StaffNotifier
from tidings.catalog import load_journey
from tidings.content.files import load_library
from tidings.db import contacts, escalations
from tidings.db.engine import Database
from tidings.directory import load_directory
from tidings.errors import SpecError
from tidings.models.contact import IdentifyContact
from tidings.models.escalations import (
    EscalationResult,
    EscalationRow,
    EscalationView,
    NotifyStaffInput,
    RecordEscalationInput,
    TierOutcome,
)
from tidings.models.events import JourneyEvent
from tidings.settings import Settings
from tidings.starter.cli import app
from tidings.starter.escalation_admin import AcknowledgmentRefusedError
from tidings.starter.outbox import read_email_outbox
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.worker import composer
from tidings.workflows.escalation import NOTIFY_RETRY, refusal

PAYMENT: dict[str, JsonValue] = {
    "amount": 49.0,
    "currency": "USD",
    "invoice_url": "https://billing.example/i/7",
}
CUSTOMER = "pat@example.com"
DIRECTORY = """\
users:
  sam: {name: Sam Okafor, roles: [account-manager], email: sam@acme.example}
  ana: {name: Ana Lima, roles: [account-manager], email: ana@acme.example}
  jo: {name: Jo Martin, roles: [team-lead], email: jo@acme.example}
  kai: {name: Kai Berg, roles: [on-call], chat: "CHAT/slack/kai"}
  lena: {name: Lena Fischer, roles: [legal], email: lena@acme.example}
"""
TIER_2 = timedelta(days=6, hours=5)
"""Three reminders (days 0, 2, 4), the escalation at day 6, tier 1's 4h over: tier 2 asked."""


@dataclass
class Chat:
    url: str
    records: Path

    def received(self) -> list[dict[str, Any]]:
        return read_records(self.records, channel="chat")


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[Chat]:
    records = tmp_path / "vendors.jsonl"
    async with running_service(create_sink_app(records), host="127.0.0.1", port=free_port()) as url:
        yield Chat(url, records)


def write_directory(tmp_path: Path, chat_url: str) -> Path:
    path = tmp_path / "directory.yaml"
    path.write_text(DIRECTORY.replace("CHAT", chat_url))
    return path


@pytest.fixture
async def stack(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, chat: Chat
) -> AsyncIterator[Stack]:
    settings = {
        "directory_file": write_directory(tmp_path, chat.url),
        "slack_webhook_url": f"{chat.url}/slack/team",
        "slack_allowed_hosts": ["127.0.0.1"],
    }
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, extra_settings=settings
    ) as s:
        yield s


async def start_payment(stack: Stack, key: str) -> None:
    await stack.client.identify(
        key, jurisdiction="US", emails=[CUSTOMER], traits={"first_name": "Pat"}
    )
    tracked = await stack.client.track(key, "payment_failed", PAYMENT)
    assert tracked.triggered == ["payment-failed"]


def escalation_id(key: str) -> str:
    return naming.escalation_workflow_id(
        naming.journey_workflow_id("payment-failed", key), 1, "follow-up", 1
    )


async def at_tier(stack: Stack, key: str, tier: int) -> EscalationRow:
    """The escalation once `tier` has been notified and waits for an acknowledgment."""
    rows = [r for r in await stack.client.escalations.list() if r.contact_key == key]
    assert len(rows) == 1, rows
    row = rows[0]
    assert len(row.tiers) == tier and row.tiers[-1].outcome == "waiting", row
    return row


async def escalation_result(stack: Stack, key: str) -> EscalationResult:
    handle = stack.temporal.get_workflow_handle(escalation_id(key), result_type=EscalationResult)
    return await asyncio.wait_for(handle.result(), 30)


def notices_to(stack: Stack, *users: str) -> dict[str, int]:
    return {user: len(stack.outbox(f"{user}@acme.example")) for user in users}


def decoded(history: WorkflowHistory) -> str:
    """The history as JSON with every payload decoded."""

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: base64.b64decode(v).decode(errors="replace")
                if k == "data" and isinstance(v, str)
                else walk(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return json.dumps(walk(json.loads(history.to_json())))


async def test_unanswered_reminders_escalate_until_the_team_lead_acknowledges(
    stack: Stack, time_skipping: WorkflowEnvironment, chat: Chat, contact_key: str
) -> None:
    await start_payment(stack, contact_key)

    await time_skipping.sleep(TIER_2)
    row = await eventually(lambda: at_tier(stack, contact_key, 2))
    acknowledged = await stack.client.escalations.acknowledge(
        str(row.number), user="jo", comment="calling them now"
    )
    result = await stack.result("payment-failed", contact_key)
    escalation = await escalation_result(stack, contact_key)
    await time_skipping.sleep(timedelta(hours=6))  # past where tier 3 would have been asked

    assert (acknowledged.user, acknowledged.role, acknowledged.tier) == ("jo", "team-lead", 2)
    assert (result.outcome, result.sends) == ("completed", 3)
    assert len(stack.outbox(CUSTOMER)) == 3
    assert notices_to(stack, "sam", "ana", "jo", "lena") == {"sam": 1, "ana": 1, "jo": 1, "lena": 0}
    assert chat.received() == []  # on-call (tier 3) was never asked
    assert escalation.outcome == "acknowledged" and escalation.acknowledged_by == "jo"
    assert [(t.tier, t.role, t.outcome, t.notified) for t in escalation.tiers] == [
        (1, "account-manager", "timed_out", ["sam", "ana"]),
        (2, "team-lead", "acknowledged", ["jo"]),
    ]
    [notice] = stack.outbox("jo@acme.example")
    assert notice.subject == (
        f"[Escalation {row.number}] Failed payment from customer {contact_key}: "
        "acknowledge within 4h"
    )
    assert "Hi Jo Martin," in notice.text and "$49.00" in notice.text
    assert "team-lead (tier 2 of 3)" in notice.text
    assert f"tidings escalations ack {row.number} --as jo" in notice.text
    [stored] = await stack.client.escalations.list()
    assert (stored.status, stored.acknowledged_by, stored.comment) == (
        "acknowledged",
        "jo",
        "calling them now",
    )
    assert [(t.outcome, t.acknowledged_by) for t in stored.tiers] == [
        ("timed_out", None),
        ("acknowledged", "jo"),
    ]
    tier_1 = stored.tiers[0]
    assert tier_1.due_at - tier_1.notified_at == timedelta(hours=4)
    assert tier_1.settled_at is not None
    assert timedelta(0) <= stored.tiers[1].notified_at - tier_1.settled_at < timedelta(minutes=1)
    # Staff logins travel in the history; addresses never do (nor the customer's).
    for workflow_id in (escalation_id(contact_key), stack.handle("payment-failed", contact_key).id):
        text = decoded(await stack.temporal.get_workflow_handle(workflow_id).fetch_history())
        assert "acme.example" not in text and CUSTOMER not in text


async def test_the_resolving_event_stops_the_escalation_mid_tier(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await start_payment(stack, contact_key)
    await time_skipping.sleep(timedelta(days=6, hours=1))
    await eventually(lambda: at_tier(stack, contact_key, 1))

    tracked = await stack.client.track(contact_key, "payment_succeeded")
    result = await stack.result("payment-failed", contact_key)
    # The escalation has closed, so no later tier can be asked. (Sleeping past the
    # tiers' deadlines here would run in real time: the test server stops skipping
    # time after a parent signals its child, temporalio/sdk-java#1618.)
    escalation = await escalation_result(stack, contact_key)

    assert tracked.woke == ["payment-failed"]
    assert result.outcome == "converted"
    assert escalation.outcome == "resolved" and escalation.resolved_by == "payment_succeeded"
    assert [(t.tier, t.outcome) for t in escalation.tiers] == [(1, "resolved")]
    assert notices_to(stack, "sam", "ana", "jo") == {"sam": 1, "ana": 1, "jo": 0}
    [stored] = await stack.client.escalations.list()
    assert (stored.status, stored.resolved_event) == ("resolved", "payment_succeeded")
    assert stored.closed_at is not None


async def test_refused_acknowledgments_say_why_and_never_enter_the_history(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await start_payment(stack, contact_key)
    await time_skipping.sleep(TIER_2)
    row = await eventually(lambda: at_tier(stack, contact_key, 2))
    admin = stack.client.escalations
    number = str(row.number)

    with pytest.raises(AcknowledgmentRefusedError) as wrong_role:
        await admin.acknowledge(number, user="lena")
    with pytest.raises(AcknowledgmentRefusedError) as not_yet:
        await admin.acknowledge(row.workflow_id, user="kai")  # on-call: tier 3, not asked yet
    cli = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["escalations", "ack", number, "--as", "lena"],
        env=cli_env(stack, time_skipping),
    )
    # Someone from an earlier tier may still take it.
    taken = await admin.acknowledge(number, user="sam", comment="mine")
    await escalation_result(stack, contact_key)
    with pytest.raises(AcknowledgmentRefusedError) as closed:
        await admin.acknowledge(number, user="jo")

    assert str(wrong_role.value) == (
        f"refused: lena may not acknowledge escalation {row.number}: only people holding the "
        "role of the current tier or an earlier one may (account-manager, team-lead)"
    )
    assert "kai may not acknowledge" in str(not_yet.value)
    assert cli.exit_code == 1
    assert f"error: refused: lena may not acknowledge escalation {row.number}" in cli.output
    assert (taken.user, taken.role, taken.tier) == ("sam", "account-manager", 2)
    assert str(closed.value) == (
        f"refused: escalation {row.number} is closed (acknowledged by sam); nothing to acknowledge"
    )
    history = await stack.temporal.get_workflow_handle(row.workflow_id).fetch_history()
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1
    text = decoded(history)
    assert '"user":"sam"' in text.replace('\\"', '"').replace(" ", "")
    assert "lena" not in text and "kai" not in text


async def test_every_tier_timing_out_exhausts_the_escalation_after_on_call_by_chat(
    stack: Stack, time_skipping: WorkflowEnvironment, chat: Chat, contact_key: str
) -> None:
    await start_payment(stack, contact_key)

    result = await stack.result("payment-failed", contact_key)
    escalation = await escalation_result(stack, contact_key)

    assert result.outcome == "completed"
    assert escalation.outcome == "exhausted"
    assert [(t.role, t.channel, t.outcome) for t in escalation.tiers] == [
        ("account-manager", "email", "timed_out"),
        ("team-lead", "email", "timed_out"),
        ("on-call", "chat", "timed_out"),
    ]
    [stored] = await stack.client.escalations.list()
    assert stored.status == "exhausted"
    [message] = chat.received()
    assert message["provider"] == "slack" and message["to"] == "kai"
    text = message["parts"]["text"]
    assert text.startswith(f"Escalation {stored.number}: a payment of $49.00 by customer")
    assert "Kai Berg (on-call, tier 3 of 3)" in text
    assert await stack.client.escalations.list(open_only=True) == []
    listed = await asyncio.to_thread(
        CliRunner().invoke, app, ["escalations", "list"], env=cli_env(stack, time_skipping)
    )
    assert listed.exit_code == 0, listed.output
    assert f"#{stored.number:<4} exhausted" in listed.output
    assert "tier 3 on-call (chat): timed_out; notified kai" in listed.output


async def test_a_retried_notify_activity_tells_nobody_twice(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await start_payment(stack, contact_key)
    await time_skipping.sleep(timedelta(days=5))
    assert len(stack.outbox(CUSTOMER)) == 3
    # Sam's notice (the first) is refused for now; Ana's goes out; the activity retries.
    stack.smtp.reply_next("451 4.3.0 try again later")

    await time_skipping.sleep(timedelta(days=1, hours=1))
    row = await eventually(lambda: at_tier(stack, contact_key, 1))

    assert row.tiers[0].notified == ["sam", "ana"]
    assert notices_to(stack, "sam", "ana") == {"sam": 1, "ana": 1}
    with stack.database.session() as session:
        notices = escalations.notices(session=session, workflow_id=row.workflow_id)
    assert sorted((n.user, n.status, n.attempts) for n in notices) == [
        ("ana", "sent", 1),
        ("sam", "sent", 2),
    ]
    history = await stack.temporal.get_workflow_handle(row.workflow_id).fetch_history()
    started = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert started == [2]


async def test_a_notice_an_earlier_attempt_may_have_sent_is_never_sent_again(
    tmp_path: Path, smtp: SmtpSink
) -> None:
    """A worker died between handing Sam's notice over and recording it."""
    database = Database(f"sqlite:///{tmp_path / 'app.db'}")
    publish(database)
    now = datetime.now(UTC)
    with database.session() as session:
        contacts.upsert_contact(
            session=session, data=IdentifyContact(key="c-1", emails=[CUSTOMER]), now=now
        )
        escalations.claim_notice(
            session=session,
            workflow_id="escalation/x",
            tier=1,
            user="sam",
            channel="email",
            now=now,
        )
    settings = Settings(data_dir=tmp_path)
    notifier = StaffNotifier(
        db=database,
        composer=composer(settings, load_library(EXAMPLE_TEMPLATES).brand),
        directory=load_directory(write_directory(tmp_path, "https://hooks.slack.com")),
        email=SmtpProvider(SmtpConfig(host=smtp.host, port=smtp.port, timeout_seconds=5)),
        sender="Acme <hello@acme.example>",
    )
    trigger = JourneyEvent(
        event_id="e-1", name="payment_failed", properties=PAYMENT, occurred_at=now
    )
    notify = NotifyStaffInput(
        escalation_id="escalation/x",
        number=1,
        journey="payment-failed",
        step_id="follow-up",
        contact_key="c-1",
        tier=1,
        tiers=3,
        role="account-manager",
        channel="email",
        template="payment-escalation",
        ack_within="4h",
        due_at=now + timedelta(hours=4),
        trigger=trigger,
        event=trigger,
        now=now,
    )

    first = activity_env(attempt=2, retry_policy=NOTIFY_RETRY).run(notifier.notify_staff, notify)
    again = activity_env(attempt=3, retry_policy=NOTIFY_RETRY).run(notifier.notify_staff, notify)

    assert first.notified == again.notified == ["sam", "ana"]  # Sam may have it: counted
    assert [m.to for m in read_email_outbox(smtp.maildir_path)] == ["ana@acme.example"]
    with database.session() as session:
        stored = {
            n.user: n.status
            for n in escalations.notices(session=session, workflow_id="escalation/x")
        }
    assert stored == {"sam": "uncertain", "ana": "sent"}
    database.dispose()


def test_only_people_asked_so_far_may_acknowledge_an_open_escalation() -> None:
    now = datetime.now(UTC)
    tier = TierOutcome(
        tier=1,
        role="account-manager",
        channel="email",
        members=["sam"],
        notified=["sam"],
        notified_at=now,
        due_at=now,
    )
    view = EscalationView(escalation_id="e", number=7, status="open", tier=1, tiers=[tier])

    assert refusal(view, "", "sam") is None
    assert refusal(view, "", "jo") is not None
    assert refusal(view.model_copy(update={"tiers": []}), "", "sam") == (
        "escalation 7 has not asked anyone yet; try again in a moment"
    )
    closed = view.model_copy(update={"status": "acknowledged"})
    assert refusal(closed, "acknowledged by sam at tier 1", "sam") == (
        "escalation 7 is closed: acknowledged by sam at tier 1; nothing to acknowledge"
    )


def test_a_tier_template_must_exist_and_have_the_tiers_channel(tmp_path: Path) -> None:
    path = tmp_path / "journey.yaml"
    path.write_text(
        textwrap.dedent("""\
            name: escalating
            version: 1
            trigger: {event: payment_failed}
            steps:
              - id: follow-up
                escalate:
                  tiers:
                    - {role: account-manager, template: payment-escalaton, ack_within: 4h}
                    - {role: on-call, channel: chat, template: payment-failed, ack_within: 1h}
            """)
    )
    with pytest.raises(SpecError) as caught:
        load_journey(path, load_library(EXAMPLE_TEMPLATES).templates)

    first, second = caught.value.problems
    assert "step 'follow-up': tier 1: unknown template 'payment-escalaton'" in first
    assert "tier 2: template 'payment-failed' has no chat variant" in second


def cli_env(stack: Stack, env: WorkflowEnvironment) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "TIDINGS_DATABASE_URL": stack.settings.database_url,
        "TIDINGS_DATA_DIR": str(stack.settings.data_dir),
    }


def test_the_database_copy_and_notice_claims(database_url: str) -> None:
    database = Database(database_url)
    now = datetime.now(UTC)
    tier = TierOutcome(
        tier=1,
        role="account-manager",
        channel="email",
        notified=["sam"],
        notified_at=now,
        due_at=now,
    )
    state = RecordEscalationInput(
        escalation_id="escalation/journey/payment-failed/c-1/1/follow-up",
        journey="payment-failed",
        contact_key="c-1",
        entry=1,
        step_id="follow-up",
        resolved_by=["payment_succeeded"],
        status="open",
        tier=1,
        tier_count=3,
        tiers=[tier],
        opened_at=now,
        now=now,
    )
    try:
        with database.session() as session:
            first = escalations.record(session=session, state=state).id
        settled = tier.model_copy(update={"outcome": "timed_out", "settled_at": now})
        closed = state.model_copy(update={"status": "exhausted", "tiers": [settled]})
        with database.session() as session:
            again = escalations.record(session=session, state=closed).id
            [row] = escalations.rows(session=session)
            assert escalations.rows(session=session, open_only=True) == []
        claims = []
        for _ in range(2):
            with database.session() as session:
                claims.append(
                    escalations.claim_notice(
                        session=session,
                        workflow_id=state.escalation_id,
                        tier=1,
                        user="sam",
                        channel="email",
                        now=now,
                    ).verdict
                )
        with database.session() as session:
            found = escalations.find(session=session, reference=str(first))
            by_id = escalations.find(session=session, reference=state.escalation_id)
    finally:
        database.dispose()

    assert first == again and found is not None and by_id is not None and found.id == by_id.id
    assert (row.status, row.closed_at, row.resolved_by) == ("exhausted", now, ["payment_succeeded"])
    assert [(t.tier, t.outcome, t.notified) for t in row.tiers] == [(1, "timed_out", ["sam"])]
    assert claims == ["send", "done"]  # the second attempt finds the first one's claim
