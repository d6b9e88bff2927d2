"""The contact policy inside journeys (time-skipping server) and its operations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import JsonValue
from sqlmodel import select
from support import Stack, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings import naming
from tidings.errors import InputError
from tidings.models.tables import AuditRecord, Delivery
from tidings.models.workflow_io import JourneyStatus
from tidings.starter.smtp_sink import SmtpSink

CART: dict[str, JsonValue] = {"total": 150.0, "currency": "EUR", "cart_url": "https://s.example/c"}
PROOF: dict[str, JsonValue] = {"form": "signup", "text": "Yes, email me offers", "page": "/join"}


async def test_a_revocation_while_a_journey_sleeps_stops_marketing_but_not_service_email(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    await stack.client.identify(
        contact_key, emails=["eva@example.de"], jurisdiction="DE", timezone="Europe/Berlin"
    )
    await stack.client.policy.grant(
        contact_key, channel="email", basis="express", source="signup form", proof=PROOF
    )
    await stack.client.track(contact_key, "signed_up")
    await time_skipping.sleep(timedelta(hours=12))  # the journey sleeps before the tips
    await stack.client.policy.revoke(contact_key, channel="email", source="unsubscribe link")

    result = await stack.result("onboarding", contact_key)

    assert result.sends == 2
    assert [s.step_id for s in stack.sent()] == ["welcome", "check-in"]
    tips = next(d for d in stack.deliveries() if d.step_id == "tips")
    assert tips.status == "skipped"
    assert "revoked consent for marketing" in (tips.error or "")
    timeline = await stack.client.policy.explain(contact_key, journey="onboarding")
    assert any("policy" in line.what and "GDPR" in line.what for line in timeline)


async def test_marketing_email_needs_consent_in_the_eu_and_for_unknown_jurisdictions(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, emails=["no-jurisdiction@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await stack.result("cart-abandonment", contact_key)
    assert stack.sent() == []
    reasons = {d.error for d in stack.deliveries()}
    assert reasons == {"strict default: marketing needs express consent; there is no consent"}


def window_file(tmp_path: Path, start: str, end: str) -> Path:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "nine-to-five.yaml").write_text(
        f"""\
name: nine-to-five
version: 1
trigger: {{event: ping}}
send_window: {{start: "{start}", end: "{end}"}}
steps:
  - id: note
    send: {{template: check-in, purpose: service, topic: updates}}
"""
    )
    return journeys


async def test_a_send_outside_the_journeys_window_waits_for_it_with_one_timer(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    now = await time_skipping.get_current_time()
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    closes = opens + timedelta(hours=2)
    journeys = window_file(tmp_path, f"{opens:%H:%M}", f"{closes:%H:%M}")
    async with running_stack(
        time_skipping, data_dir=tmp_path / "data", smtp=smtp, journeys_dir=journeys
    ) as s:
        await s.client.identify(contact_key, emails=["w@example.com"], jurisdiction="US")
        await s.client.track(contact_key, "ping")
        handle = s.handle("nine-to-five", contact_key)
        status = await _held(handle)

        await s.result("nine-to-five", contact_key)
        history = await handle.fetch_history()

        assert status.waiting_for == "policy:window"
        assert status.details.startswith("Held: waiting for quiet hours to end at ")
        assert "the journey's send window" in status.details
        [sent] = s.sent()
        assert opens <= sent.scheduled_at < opens + timedelta(seconds=5)
        timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        assert len(timers) == 1


async def _held(handle: object) -> JourneyStatus:
    from support import eventually
    from temporalio.client import WorkflowHandle

    assert isinstance(handle, WorkflowHandle)

    async def check() -> JourneyStatus:
        status: JourneyStatus = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
        assert status.waiting_for.startswith("policy"), status
        return status

    return await eventually(check)


def twenty_promotions(tmp_path: Path) -> Path:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    for n in range(20):
        (journeys / f"promo-{n}.yaml").write_text(
            f"""\
name: promo-{n}
version: 1
trigger: {{event: sale_started}}
steps:
  - id: offer
    send: {{template: cart-offer, purpose: marketing, topic: promo-{n}}}
"""
        )
    return journeys


async def test_twenty_concurrent_journeys_of_one_contact_send_exactly_the_cap(
    time_skipping: WorkflowEnvironment,
    smtp: SmtpSink,
    tmp_path: Path,
    contact_key: str,
    database_url: str,
) -> None:
    """The policy's default cap is 3 marketing messages a week; all 20 try at once."""
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=twenty_promotions(tmp_path),
        database_url=database_url,
    ) as s:
        await s.client.identify(contact_key, emails=["busy@example.com"], jurisdiction="US")
        started = await s.client.track(
            contact_key, "sale_started", {"cart_url": "https://s.example/sale"}
        )
        results = [await s.result(f"promo-{n}", contact_key) for n in range(20)]

        assert len(started.triggered) == 20
        assert sum(r.sends for r in results) == 3
        assert len(s.outbox()) == 3
        statuses = sorted(d.status for d in s.deliveries())
        assert statuses == ["sent"] * 3 + ["skipped"] * 17
        skipped = {d.error for d in s.deliveries() if d.status == "skipped"}
        assert all("3 marketing messages a week" in (e or "") for e in skipped)
        assert all("beyond the 3d a marketing message may wait" in (e or "") for e in skipped)


async def test_a_blackout_defers_a_send_to_its_end(
    stack: Stack, time_skipping: WorkflowEnvironment, contact_key: str
) -> None:
    now = await time_skipping.get_current_time()
    await stack.client.policy.add_blackout(
        "system incident", starts_at=now, ends_at=now + timedelta(hours=6), regions=["US"]
    )
    await stack.client.identify(contact_key, emails=["b@example.com"], jurisdiction="US-TX")
    await stack.client.track(contact_key, "cart_updated", CART)

    await stack.result("cart-abandonment", contact_key)

    reminder = stack.sent()[0]
    assert reminder.step_id == "reminder"
    assert now + timedelta(hours=6) <= reminder.scheduled_at < now + timedelta(hours=6, seconds=5)
    with stack.database.session() as session:
        rules = {r.rule for r in session.exec(select(AuditRecord)) if r.action == "wait"}
    assert rules == {"blackout: system incident"}


async def test_inbound_stop_revokes_every_sms_purpose_at_once_and_start_restores(
    stack: Stack, contact_key: str
) -> None:
    admin = stack.client.policy
    await stack.client.identify(contact_key, phones=["+1 512 555 0100"], jurisdiction="US-TX")
    written = await admin.grant(
        contact_key, channel="sms", basis="express_written", source="checkout", proof=PROOF
    )

    stop = await admin.inbound_sms("+15125550100", "  Opt Out ")
    stopped = await admin.report(contact_key)
    start = await admin.inbound_sms("+15125550100", "unstop")
    restored = await admin.report(contact_key)
    help_ = await admin.inbound_sms("+15125550100", "HELP")

    assert (stop.keyword, stop.contact_key) == ("stop", contact_key)
    assert "Reply START" in (stop.reply or "")
    assert {(s.purpose, s.state) for s in stopped.scopes} == {
        ("marketing", "granted"),
        (None, "revoked"),
    }
    assert start.keyword == "start"
    assert restored.ledger[-1].basis == "express_written"
    assert restored.ledger[-1].proof["restores_entry"] == written.id
    assert help_.reply == stack.client.catalog.policy.sms_help_text


async def test_stop_from_an_unknown_number_suppresses_the_number(stack: Stack) -> None:
    result = await stack.client.policy.inbound_sms("+14155550111", "STOP")
    assert (result.keyword, result.contact_key) == ("stop", None)
    with stack.database.session() as session:
        from tidings.models.tables import SuppressionRecord

        [row] = session.exec(select(SuppressionRecord)).all()
    assert (row.address, row.channel) == ("+14155550111", "sms")


async def test_casl_implied_consent_is_recorded_with_its_legal_expiry(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, emails=["ca@example.ca"], jurisdiction="CA-ON")
    bought = datetime(2026, 3, 15, 12, tzinfo=UTC)
    entry = await stack.client.policy.grant(
        contact_key,
        channel="email",
        basis="implied_purchase",
        source="checkout",
        effective_at=bought,
    )
    report = await stack.client.policy.report(contact_key)
    assert entry.expires_at == datetime(2028, 3, 15, 12, tzinfo=UTC)
    assert report.scopes[0].expires_at == entry.expires_at
    assert report.packs == ["CASL"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"basis": None}, "a grant needs a legal basis"),
        ({"basis": "express", "proof": {}}, "express consent needs proof"),
        ({"basis": "vibes"}, "basis"),
        ({"channel": "pigeon"}, "channel"),
    ],
)
async def test_a_malformed_consent_change_is_refused_whole(
    stack: Stack, contact_key: str, change: dict[str, object], expected: str
) -> None:
    await stack.client.identify(contact_key, emails=["x@example.com"])
    fields: dict[str, object] = {
        "channel": "email",
        "basis": "express",
        "source": "form",
        "proof": PROOF,
        **change,
    }
    with pytest.raises(InputError, match=expected):
        await stack.client.policy.grant(contact_key, **fields)  # type: ignore[arg-type]
    assert (await stack.client.policy.report(contact_key)).ledger == []


async def test_a_send_that_lost_its_consent_is_recorded_as_skipped_with_the_rule(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, emails=["gb@example.co.uk"], jurisdiction="GB")
    await stack.client.policy.grant(
        contact_key, channel="email", basis="legitimate_interest", source="existing customer"
    )
    await stack.client.policy.revoke(
        contact_key, channel="email", source="preference center", objection=True
    )
    await stack.client.track(contact_key, "cart_updated", CART)
    await stack.result("cart-abandonment", contact_key)
    with stack.database.session() as session:
        rows = list(session.exec(select(Delivery)))
    assert {r.status for r in rows} == {"skipped"}
    assert all("objected to direct marketing" in (r.error or "") for r in rows), [
        r.error for r in rows
    ]


async def test_after_stop_and_start_service_texts_flow_again(
    stack: Stack, contact_key: str
) -> None:
    from tidings.db.policy_facts import load_facts
    from tidings.models.policy import Message
    from tidings.policy.engine import decide

    admin = stack.client.policy
    await stack.client.identify(contact_key, phones=["+15125550101"], jurisdiction="US-TX")
    await admin.grant(
        contact_key, channel="sms", basis="express_written", source="checkout", proof=PROOF
    )
    await admin.inbound_sms("+15125550101", "STOP")
    await admin.inbound_sms("+15125550101", "START")
    noon = datetime(2027, 1, 5, 18, tzinfo=UTC)  # 12:00 in Texas

    def decision(purpose: str) -> str:
        with stack.database.session() as session:
            facts = load_facts(
                session=session,
                contact_key=contact_key,
                message=Message(channel="sms", purpose=purpose, topic="account"),
                now=noon,
                config=stack.client.catalog.policy,
                default_timezone="America/Chicago",
            )
        return decide(facts).action

    assert [decision(p) for p in ("service", "transactional", "marketing")] == ["send"] * 3


async def test_an_address_suppression_is_normalized_like_the_identity(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, emails=["bob@example.com"], jurisdiction="US")
    await stack.client.policy.suppress(address="  Bob@Example.COM ", reason="hard_bounce")
    await stack.client.track(contact_key, "signed_up")
    await stack.result("onboarding", contact_key)
    assert stack.sent() == []
    assert {d.status for d in stack.deliveries()} == {"skipped"}
