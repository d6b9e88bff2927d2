"""Approval gates: quorum and order, validators (refusals never enter the history),
deadlines with each outcome (time-skipping), reminders, and the approvers' CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLE_TEMPLATES, Stack, eventually, running_stack
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings.db import approvals as gate_rows
from tidings.db.engine import Database
from tidings.models.approvals import (
    ApprovalDecision,
    GatedMessage,
    GateRow,
    GateState,
    OpenGateInput,
)
from tidings.models.events import JourneyEvent
from tidings.models.workflow_io import JourneyStatus
from tidings.starter.approval_admin import DecisionRefusedError
from tidings.starter.cli import app as cli
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.workflows import approval_gate

CART: dict[str, Any] = {"total": 42, "currency": "USD", "cart_url": "https://s.example/c/1"}

DIRECTORY = """\
users:
  lena: {name: Lena, roles: [legal], email: lena@acme.example}
  lee: {name: Lee, roles: [legal], email: lee@acme.example}
  carlos: {name: Carlos, roles: [compliance], email: carlos@acme.example}
  vera: {name: Vera, roles: [vp], email: vera@acme.example}
  max: {name: Max, roles: [marketing], email: max@acme.example}
"""

JOURNEY = """\
name: offer
version: 1
trigger: {event: offer}
steps:
  - id: sign-off
    approve: {APPROVE}
  - id: offer
    send: {template: cart-reminder, purpose: marketing, topic: cart}
"""


def stack_for(env: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, approve: str) -> Any:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "offer.yaml").write_text(JOURNEY.replace("{APPROVE}", approve))
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY)
    return running_stack(
        env,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journeys,
        templates_dir=EXAMPLE_TEMPLATES,
        extra_settings={"directory_file": directory},
    )


async def open_gate(stack: Stack, key: str) -> GateRow:
    await stack.client.identify(key, jurisdiction="US", emails=[f"{key}@example.com"])
    await stack.client.track(key, "offer", CART)

    async def opened() -> list[GateRow]:
        return await stack.client.approvals.list()

    [gate] = await eventually(opened)
    return gate


def customer_mail(stack: Stack, key: str) -> list[str]:
    return [m.subject for m in stack.outbox(f"{key}@example.com")]


def approver_mail(stack: Stack, user: str) -> list[str]:
    return [m.subject for m in stack.outbox(f"{user}@acme.example")]


async def accepted_updates(stack: Stack, key: str) -> int:
    history = await stack.handle("offer", key).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


@pytest.fixture
async def two_roles(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    approve = "{roles: [legal, compliance], deadline: 1d}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        yield stack


async def test_every_role_must_approve_before_the_message_goes_out(
    two_roles: Stack, contact_key: str
) -> None:
    stack = two_roles
    gate = await open_gate(stack, contact_key)
    assert gate.pending_roles == ["legal", "compliance"]
    parts = gate.preview["parts"]
    assert isinstance(parts, dict) and parts["subject"] == "You left something in your cart"

    first = await stack.client.approvals.decide(gate.id, user="lena", verdict="approve")
    assert (first.status, first.pending_roles) == ("open", ["compliance"])
    assert customer_mail(stack, contact_key) == []
    second = await stack.client.approvals.decide(
        gate.id, user="carlos", verdict="approve", comment="fine for US"
    )
    result = await stack.result("offer", contact_key)

    assert second.status == "approved"
    assert (result.outcome, result.sends) == ("completed", 1)
    assert customer_mail(stack, contact_key) == ["You left something in your cart"]
    row = await stack.client.approvals.show(gate.id)
    assert row.status == "approved" and row.decided_at is not None
    assert [(v.user, v.role, v.verdict, v.comment) for v in row.votes] == [
        ("lena", "legal", "approve", ""),
        ("carlos", "compliance", "approve", "fine for US"),
    ]
    # The first notice went to everyone who could decide, once each.
    assert len(approver_mail(stack, "lena")) == len(approver_mail(stack, "carlos")) == 1


async def test_refused_decisions_never_enter_the_history(
    two_roles: Stack, contact_key: str
) -> None:
    stack = two_roles
    gate = await open_gate(stack, contact_key)
    approvals = stack.client.approvals

    refusals = [
        ({"user": "max", "verdict": "approve"}, "holds none of the roles"),
        ({"user": "carlos", "verdict": "approve", "role": "legal"}, "not hold the role legal"),
        ({"user": "lena", "verdict": "reject"}, "needs a comment"),
    ]
    for decision, why in refusals:
        with pytest.raises(DecisionRefusedError, match=why):
            await approvals.decide(gate.id, **decision)  # type: ignore[arg-type]
    await approvals.decide(gate.id, user="lena", verdict="approve")
    with pytest.raises(DecisionRefusedError, match="already decided"):
        await approvals.decide(gate.id, user="lena", verdict="approve")
    with pytest.raises(DecisionRefusedError, match="already decided"):
        await approvals.decide(gate.id, user="lena", verdict="reject", comment="changed my mind")

    assert await accepted_updates(stack, contact_key) == 1
    await approvals.decide(gate.id, user="carlos", verdict="reject", comment="missing terms")
    result = await stack.result("offer", contact_key)
    assert (result.outcome, result.sends) == ("exited", 0)
    assert "rejected" in result.reason
    with pytest.raises(DecisionRefusedError, match=r"ended|no open approval gate"):
        await approvals.decide(gate.id, user="lee", verdict="approve")
    assert customer_mail(stack, contact_key) == []


async def test_sequential_roles_decide_in_order_and_quorum_counts_people(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    approve = "{roles: [legal, compliance], quorum: 2, order: sequential, deadline: 1d}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        gate = await open_gate(stack, contact_key)
        approvals = stack.client.approvals
        assert gate.pending_roles == ["legal"]
        with pytest.raises(DecisionRefusedError, match="not compliance's turn"):
            await approvals.decide(gate.id, user="carlos", verdict="approve")
        await approvals.decide(gate.id, user="lena", verdict="approve")
        assert (await approvals.show(gate.id)).pending_roles == ["legal"]  # quorum 2
        view = await approvals.decide(gate.id, user="lee", verdict="approve")
        assert view.pending_roles == ["compliance"]
        await approvals.decide(gate.id, user="carlos", verdict="approve")
        result = await stack.result("offer", contact_key)
        # Carlos is the only compliance approver: quorum 2 cannot be met, so the
        # deadline decides (end, the default).
        assert (result.outcome, result.sends) == ("exited", 0)
        assert "no approval by the deadline" in result.reason
        assert (await approvals.show(gate.id)).status == "expired"


@pytest.mark.parametrize(
    ("on_deadline", "outcome", "sends"),
    [("send", "completed", 1), ("skip", "completed", 0), ("end", "exited", 0)],
)
async def test_the_deadline_decides_as_the_step_says(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    contact_key: str,
    on_deadline: str,
    outcome: str,
    sends: int,
) -> None:
    approve = f"{{roles: [legal], deadline: 4h, on_deadline: {on_deadline}}}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        gate = await open_gate(stack, contact_key)
        result = await stack.result("offer", contact_key)
        row = await stack.client.approvals.show(gate.id)

    assert (result.outcome, result.sends) == (outcome, sends)
    assert len(customer_mail(stack, contact_key)) == sends
    assert row.status == "expired"
    assert row.decided_at is not None and row.decided_at - row.created_at >= timedelta(hours=4)


async def test_escalation_at_the_deadline_asks_another_role_who_can_approve(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    approve = "{roles: [legal], deadline: 2h, on_deadline: escalate, escalate_to: vp}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        gate = await open_gate(stack, contact_key)
        approvals = stack.client.approvals
        await stack.env.sleep(timedelta(hours=2, minutes=1))  # past the first deadline

        async def escalated() -> bool:
            # The gate asks vp now, and vp has been told (the workflow is idle again).
            gate_now = await approvals.show(gate.id)
            return gate_now.pending_roles == ["vp"] and len(approver_mail(stack, "vera")) == 1

        await eventually(escalated)
        with pytest.raises(DecisionRefusedError, match="holds none of the roles"):
            await approvals.decide(gate.id, user="lena", verdict="approve")
        await approvals.decide(gate.id, user="vera", verdict="approve", comment="go")
        result = await stack.result("offer", contact_key)

    assert (result.outcome, result.sends) == ("completed", 1)
    assert len(approver_mail(stack, "vera")) == 1  # notified when the gate escalated to vp


async def test_reminders_go_to_those_who_have_not_decided(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    approve = "{roles: [legal, compliance], deadline: 1d, remind_every: 8h, on_deadline: skip}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        gate = await open_gate(stack, contact_key)
        await stack.client.approvals.decide(gate.id, user="carlos", verdict="approve")
        result = await stack.result("offer", contact_key)

    assert (result.outcome, result.sends) == ("completed", 0)
    # The opening notice, then reminders at 8h and 16h; carlos decided at once.
    assert len(approver_mail(stack, "lena")) == len(approver_mail(stack, "lee")) == 3
    assert len(approver_mail(stack, "carlos")) == 1
    assert all(
        gate.id in subject or "Approval needed" in subject
        for subject in approver_mail(stack, "lena")
    )


async def test_approvers_use_the_cli(two_roles: Stack, contact_key: str) -> None:
    stack = two_roles
    gate = await open_gate(stack, contact_key)
    env = {
        "TIDINGS_DATABASE_URL": stack.settings.database_url,
        "TIDINGS_DIRECTORY_FILE": str(stack.settings.directory_file),
        "TIDINGS_JOURNEYS_DIR": str(stack.settings.journeys_dir),
        "TIDINGS_DATA_DIR": str(stack.settings.data_dir),
        "TEMPORAL_ADDRESS": stack.temporal.service_client.config.target_host,
    }
    runner = CliRunner()

    async def invoke(*args: str) -> Any:
        # The CLI runs its own event loop: give it a thread.
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)

    listed = await invoke("approvals", "list", "--mine", "lena", "--json")
    assert listed.exit_code == 0, listed.output
    assert [g["id"] for g in json.loads(listed.output)] == [gate.id]
    shown = await invoke("approvals", "show", gate.id)
    assert "You left something in your cart" in shown.output
    assert "waiting on: legal, compliance" in shown.output

    refused = await invoke("approvals", "approve", gate.id, "--as", "max")
    assert refused.exit_code == 1
    assert "holds none of the roles" in refused.output
    unknown = await invoke("approvals", "approve", gate.id, "--as", "nobody")
    assert "'nobody' is not in the directory" in unknown.output
    approved = await invoke("approvals", "approve", gate.id, "--as", "lena", "--comment", "ok")
    assert approved.exit_code == 0, approved.output
    assert "lena (legal) approved gate" in approved.output
    assert "still waiting on: compliance" in approved.output
    rejected = await invoke("approvals", "reject", gate.id, "--as", "carlos")
    assert rejected.exit_code != 0  # --comment is required
    rejected = await invoke("approvals", "reject", gate.id, "--as", "carlos", "--comment", "no")
    assert rejected.exit_code == 0, rejected.output
    assert "the gate is rejected" in rejected.output
    assert (await stack.result("offer", contact_key)).outcome == "exited"


async def test_a_batch_gate_takes_one_decision_for_every_contact(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> None:
    approve = "{roles: [legal], deadline: 1d, scope: batch}"
    keys = ["batch-a", "batch-b", "batch-c"]
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        for key in keys:
            await stack.client.identify(key, jurisdiction="US", emails=[f"{key}@example.com"])
            await stack.client.track(key, "offer", CART)

        async def all_waiting() -> bool:
            statuses = [
                await stack.handle("offer", k).query("status", result_type=JourneyStatus)
                for k in keys
            ]
            return all(s.waiting_for.startswith("approval:") for s in statuses)

        await eventually(all_waiting)
        [gate] = await stack.client.approvals.list()
        assert gate.scope == "batch" and gate.workflow_id == "approval/offer/v1/sign-off"
        assert gate.contact_key in keys  # the first to arrive: the preview's sample
        await stack.client.approvals.decide(gate.id, user="lena", verdict="approve")
        results = [await stack.result("offer", k) for k in keys]

        # A contact reaching the step after the decision goes straight through.
        await stack.client.identify("batch-d", jurisdiction="US", emails=["batch-d@example.com"])
        await stack.client.track("batch-d", "offer", CART)
        late = await stack.result("offer", "batch-d")

    assert [(r.outcome, r.sends) for r in results] == [("completed", 1)] * 3
    assert (late.outcome, late.sends) == ("completed", 1)
    assert all(len(customer_mail(stack, k)) == 1 for k in [*keys, "batch-d"])
    assert len(approver_mail(stack, "lena")) == 1  # one gate, one notice


async def test_an_approver_with_a_chat_webhook_is_told_through_the_chat_provider(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    """Teams' own wire format (an Adaptive Card, which Teams insists on) and its allow-list,
    as escalation notices use: not a raw JSON POST."""
    records = tmp_path / "vendors.jsonl"
    async with running_service(create_sink_app(records), host="127.0.0.1", port=free_port()) as url:
        journeys = tmp_path / "journeys"
        journeys.mkdir()
        (journeys / "offer.yaml").write_text(
            JOURNEY.replace("{APPROVE}", "{roles: [legal], deadline: 1d}")
        )
        directory = tmp_path / "directory.yaml"
        directory.write_text(
            "users:\n"
            f"  lena: {{name: Lena, roles: [legal], email: lena@acme.example, "
            f"chat: '{url}/teams/lena'}}\n"
            # Reached by email; her chat webhook is on a host the allow-list refuses.
            f"  lee: {{name: Lee, roles: [legal], email: lee@acme.example, "
            f"chat: '{url.replace('127.0.0.1', 'localhost')}/teams/lee'}}\n"
        )
        async with running_stack(
            time_skipping,
            data_dir=tmp_path / "data",
            smtp=smtp,
            journeys_dir=journeys,
            templates_dir=EXAMPLE_TEMPLATES,
            extra_settings={
                "directory_file": directory,
                "chat_providers": ["teams"],
                "teams_webhook_url": f"{url}/teams/team",
                "teams_allowed_hosts": ["127.0.0.1"],
            },
        ) as stack:
            gate = await open_gate(stack, contact_key)

            async def told() -> list[dict[str, Any]]:
                return read_records(records, channel="chat")

            [message] = await eventually(told)
            # Once the journey is done, every attempt at the notice has run.
            await stack.client.approvals.decide(gate.id, user="lena", verdict="approve")
            await stack.result("offer", contact_key)

    assert (message["provider"], message["to"]) == ("teams", "lena")
    assert message["parts"]["text"].startswith("Approval needed: offer / sign-off")
    assert f"/approvals/{gate.id}" in message["parts"]["text"]
    assert len(approver_mail(stack, "lena")) == 1  # and by email, as before
    # The refused chat does not make a retry send lee's email again.
    assert len(approver_mail(stack, "lee")) == 1


def test_the_rules_refuse_decisions_after_the_deadline() -> None:
    opened = datetime(2026, 11, 23, 9, tzinfo=UTC)
    gate = GateState(
        gate_id="g1",
        step_id="sign-off",
        roles=["legal"],
        quorum=1,
        order="parallel",
        eligible={"legal": ["lena"]},
        opened_at=opened,
        deadline=opened + timedelta(hours=4),
    )
    decision = ApprovalDecision(gate_id="g1", user="lena", verdict="approve")
    assert approval_gate.refusal(gate, decision, opened + timedelta(hours=3)) is None
    late = approval_gate.refusal(gate, decision, opened + timedelta(hours=4))
    assert late is not None and "passed its deadline" in late
    other = approval_gate.refusal(gate, decision.model_copy(update={"gate_id": "g2"}), opened)
    assert other is not None and "not the one open" in other
    approval_gate.apply(gate, decision, opened)
    assert gate.status == "approved"
    closed = approval_gate.refusal(gate, decision.model_copy(update={"user": "lee"}), opened)
    assert closed is not None and "closed (approved)" in closed


def test_a_retried_opening_finds_the_gate_it_opened(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'app.db'}")
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    event = JourneyEvent(event_id="e1", name="offer", properties={}, occurred_at=now)
    opening = OpenGateInput(
        gate_key="journey/offer/c1/1/sign-off/1",
        workflow_id="journey/offer/c1",
        journey="offer",
        journey_version=1,
        step_id="sign-off",
        gated_step="offer",
        contact_key="c1",
        message=GatedMessage(
            template="cart-reminder",
            version=None,
            channel="email",
            purpose="marketing",
            topic="cart",
        ),
        trigger=event,
        event=event,
        roles=["legal", "compliance"],
        quorum=1,
        order="sequential",
        deadline=now + timedelta(days=1),
        now=now,
    )
    try:
        with database.session() as session:
            first = gate_rows.open_gate(session=session, opening=opening, preview={}, findings=[])
            first_id = first.id
        with database.session() as session:
            again = gate_rows.open_gate(
                session=session, opening=opening, preview={"other": 1}, findings=[]
            )
            assert again.id == first_id and again.preview == {}
            [listed] = gate_rows.listing(session=session, roles=["legal"])
            assert gate_rows.listing(session=session, roles=["compliance"]) == []  # not its turn
    finally:
        database.dispose()
    assert listed.pending_roles == ["legal"]
