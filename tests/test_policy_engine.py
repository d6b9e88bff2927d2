"""The policy engine at its boundaries: pure decisions from facts, no servers needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tidings.models.policy import (
    Blackout,
    Cap,
    Channel,
    ConsentAction,
    ConsentBasis,
    ConsentEntry,
    ContactFacts,
    Message,
    MinInterval,
    PolicyConfig,
    Preference,
    RecentSend,
    SendWindow,
    Suppression,
    SuppressionReason,
)
from tidings.models.primitives import Purpose, parse_time_of_day
from tidings.policy.engine import Facts, decide
from tidings.policy.keywords import classify

CHICAGO, NEW_YORK = "America/Chicago", "America/New_York"
CONFIG = PolicyConfig()


def at(tz: str, text: str) -> datetime:
    """A local wall-clock time, e.g. at(CHICAGO, '2027-01-05 07:59')."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def grant(
    basis: ConsentBasis | None,
    *,
    channel: Channel = "sms",
    effective: str = "2020-01-01",
    id: int = 1,
    purpose: Purpose | None = "marketing",
    topic: str | None = None,
    action: ConsentAction = "grant",
) -> ConsentEntry:
    return ConsentEntry(
        id=id,
        contact_key="c1",
        channel=channel,
        purpose=purpose,
        topic=topic,
        action=action,
        basis=basis,
        source="test",
        proof={},
        effective_at=datetime.fromisoformat(effective).replace(tzinfo=UTC),
        expires_at=None,
    )


def revoke(**scope: Any) -> ConsentEntry:
    return grant(None, action="revoke", **scope)


def facts(
    now: datetime,
    *,
    jurisdiction: str | None = "US-TX",
    tz: str = CHICAGO,
    channel: Channel = "sms",
    purpose: Purpose = "marketing",
    topic: str = "deals",
    config: PolicyConfig = CONFIG,
    consents: tuple[ConsentEntry, ...] = (),
    suppressions: tuple[Suppression, ...] = (),
    preferences: tuple[Preference, ...] = (),
    blackouts: tuple[Blackout, ...] = (),
    recent: tuple[RecentSend, ...] = (),
    waiting_since: datetime | None = None,
) -> Facts:
    address = "+15125550100" if channel == "sms" else "c1@example.com"
    return Facts(
        contact=ContactFacts(key="c1", jurisdiction=jurisdiction, timezone=tz),
        message=Message(channel=channel, purpose=purpose, topic=topic, address=address),
        now=now,
        config=config,
        consents=consents,
        suppressions=suppressions,
        preferences=preferences,
        blackouts=blackouts,
        recent=recent,
        waiting_since=waiting_since,
    )


WRITTEN = (grant("express_written"),)


@pytest.mark.parametrize(
    ("local", "action", "until"),
    [
        ("2027-01-05 07:59", "wait", "2027-01-05 08:00"),
        ("2027-01-05 08:00", "send", None),
        ("2027-01-05 20:59", "send", None),
        ("2027-01-05 21:00", "wait", "2027-01-06 08:00"),
    ],
)
def test_tcpa_quiet_hours_at_their_edges(local: str, action: str, until: str | None) -> None:
    decision = decide(facts(at(CHICAGO, local), consents=WRITTEN))
    assert decision.action == action
    if until is not None:
        assert decision.until == at(CHICAGO, until)
        assert decision.reason.startswith(
            "waiting for quiet hours to end at 08:00 America/Chicago on "
        )
        assert "US TCPA" in decision.rule


@pytest.mark.parametrize(
    ("local", "expected_utc"),
    [
        ("2027-03-14 07:30", datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),  # spring forward: EDT
        ("2027-03-13 21:30", datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),  # across the change
        ("2027-11-07 06:00", datetime(2027, 11, 7, 13, 0, tzinfo=UTC)),  # fall back: EST
        ("2027-11-06 22:00", datetime(2027, 11, 7, 13, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_end_at_eight_local_on_dst_days(local: str, expected_utc: datetime) -> None:
    decision = decide(
        facts(at(NEW_YORK, local), tz=NEW_YORK, jurisdiction="US-NY", consents=WRITTEN)
    )
    assert (decision.action, decision.until) == ("wait", expected_utc)


def test_marketing_sms_in_the_us_needs_express_written_consent() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    plain = decide(facts(now, consents=(grant("express"),)))
    assert plain.action == "skip"
    assert "prior express written consent" in plain.rule
    assert decide(facts(now, consents=WRITTEN)).action == "send"
    assert decide(facts(now, purpose="service")).action == "send"


def sent(
    local: str,
    topic: str = "deals",
    tz: str = "America/New_York",
    purpose: str = "marketing",
    channel: str = "sms",
) -> RecentSend:
    return RecentSend(channel=channel, purpose=purpose, topic=topic, at=at(tz, local))


def test_a_florida_contacts_fourth_marketing_message_in_24_hours_waits() -> None:
    three = (sent("2027-01-05 09:00"), sent("2027-01-05 12:00"), sent("2027-01-05 15:00"))
    now = at(NEW_YORK, "2027-01-05 17:00")
    florida = partial(facts, jurisdiction="US-FL", tz=NEW_YORK, consents=WRITTEN)

    fourth = decide(florida(now, recent=three))
    other_topic = decide(florida(now, recent=three, topic="news"))
    texan = decide(facts(now, recent=three, jurisdiction="US-TX", tz=NEW_YORK, consents=WRITTEN))

    assert fourth.action == "wait"
    assert fourth.until == at(NEW_YORK, "2027-01-06 09:00")
    assert (
        fourth.rule
        == "frequency cap: Florida FTSA: 3 marketing texts or calls per 24 h on one topic"
    )
    assert (other_topic.action, texan.action) == ("send", "send")


def test_florida_marketing_texts_stop_at_eight_in_the_evening() -> None:
    florida = partial(facts, jurisdiction="US-FL", tz=NEW_YORK, consents=WRITTEN)
    assert decide(florida(at(NEW_YORK, "2027-01-05 19:59"))).action == "send"
    late = decide(florida(at(NEW_YORK, "2027-01-05 20:00")))
    assert late.until == at(NEW_YORK, "2027-01-06 08:00")
    assert "Florida FTSA" in late.rule


@pytest.mark.parametrize(
    ("day", "action"), [("2027-03-14 12:00", "send"), ("2027-03-15 12:00", "skip")]
)
def test_casl_implied_consent_from_a_purchase_lasts_two_years(day: str, action: str) -> None:
    bought = (grant("implied_purchase", channel="email", effective="2025-03-15T12:00:00"),)
    decision = decide(
        facts(
            at("America/Toronto", day),
            jurisdiction="CA-ON",
            tz="America/Toronto",
            channel="email",
            consents=bought,
        )
    )
    assert decision.action == action
    if action == "skip":
        assert decision.rule.startswith("CASL")
        assert "consent expired 2027-03-15" in decision.reason


def test_casl_implied_consent_from_an_inquiry_lasts_six_months() -> None:
    asked = (grant("implied_inquiry", channel="email", effective="2026-06-01T00:00:00"),)
    canada = partial(
        facts, jurisdiction="CA-QC", tz="America/Toronto", channel="email", consents=asked
    )
    assert decide(canada(at("America/Toronto", "2026-11-30 12:00"))).action == "send"
    assert decide(canada(at("America/Toronto", "2026-12-02 12:00"))).action == "skip"


def test_a_gdpr_objection_blocks_marketing_but_not_transactional_messages() -> None:
    interest = grant("legitimate_interest", channel="email", id=1)
    objection = grant(None, channel="email", id=2, action="object", effective="2021-01-01")
    germany = partial(facts, jurisdiction="DE", tz="Europe/Berlin", channel="email")
    now = at("Europe/Berlin", "2027-01-05 12:00")

    before = decide(germany(now, consents=(interest,)))
    marketing = decide(germany(now, consents=(interest, objection)))
    regranted = grant("legitimate_interest", channel="email", id=3, effective="2022-01-01")
    again = decide(germany(now, consents=(interest, objection, regranted)))
    receipt = decide(germany(now, consents=(interest, objection), purpose="transactional"))

    assert before.action == "send"
    assert marketing.action == "skip" and "GDPR" in marketing.rule
    assert again.action == "skip" and "objected to direct marketing" in again.reason
    assert receipt.action == "send"


def test_us_marketing_email_needs_no_opt_in_but_an_opt_out_holds_at_once() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    optout = revoke(channel="email", effective="2027-01-05T17:59:00")
    assert decide(facts(now, channel="email")).action == "send"
    revoked = decide(facts(now, channel="email", consents=(optout,)))
    assert revoked.action == "skip"
    assert revoked.rule.startswith("CAN-SPAM: an opt-out is honored at once")


def test_an_unknown_jurisdiction_gets_the_strict_default() -> None:
    now = at("Asia/Tokyo", "2027-01-05 12:00")
    tokyo = partial(facts, jurisdiction=None, tz="Asia/Tokyo", channel="email")
    assert decide(tokyo(now)).rule == "strict default: marketing needs express consent"
    assert decide(tokyo(now, consents=(grant("express", channel="email"),))).action == "send"
    night = decide(
        facts(
            at("Asia/Tokyo", "2027-01-05 20:30"),
            jurisdiction="JP",
            tz="Asia/Tokyo",
            purpose="service",
        )
    )
    assert night.action == "wait" and night.until == at("Asia/Tokyo", "2027-01-06 08:00")


def test_hipaa_marketing_needs_authorization_treatment_reminders_do_not() -> None:
    hipaa = PolicyConfig(sector_packs=["hipaa"])
    now = at(CHICAGO, "2027-01-05 12:00")
    promo = decide(facts(now, channel="email", config=hipaa))
    reminder = decide(
        facts(now, channel="email", purpose="service", topic="treatment", config=hipaa)
    )
    assert promo.action == "skip" and promo.rule.startswith("HIPAA")
    assert reminder.action == "send"


def test_revocations_and_grants_by_topic_and_purpose() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    entries = (
        grant("express_written", id=1),
        revoke(id=2, topic="deals", effective="2021-01-01"),
    )
    assert decide(facts(now, consents=entries)).action == "skip"
    assert decide(facts(now, consents=entries, topic="news")).action == "send"
    stop = revoke(id=3, purpose=None, effective="2022-01-01")
    everything = (*entries, stop)
    assert decide(facts(now, consents=everything, topic="news")).action == "skip"
    assert decide(facts(now, consents=everything, purpose="service")).action == "skip"
    assert decide(facts(now, consents=everything, purpose="transactional")).action == "skip"
    assert decide(facts(now, consents=everything, purpose="critical")).action == "send"


def suppression(
    reason: SuppressionReason,
    *,
    channel: Channel,
    contact_key: str | None = None,
    address: str | None = None,
) -> Suppression:
    return Suppression(
        id=9,
        reason=reason,
        note="",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        contact_key=contact_key,
        channel=channel,
        address=address,
    )


def test_suppressions_let_only_critical_messages_through_and_never_to_dead_addresses() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    complaint = (suppression("complaint", contact_key="c1", channel="sms"),)
    dead = (suppression("invalid_number", address="+15125550100", channel="sms"),)
    assert (
        decide(facts(now, consents=WRITTEN, suppressions=complaint)).rule
        == "suppression: complaint"
    )
    assert decide(facts(now, purpose="critical", suppressions=complaint)).action == "send"
    assert decide(facts(now, purpose="critical", suppressions=dead)).action == "skip"
    assert decide(facts(now, channel="email", suppressions=dead)).action == "send"


def test_topic_preferences_hold_for_marketing_and_service_only() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    off = (Preference(channel="email", topic="billing", subscribed=False),)
    common = partial(facts, channel="email", topic="billing", preferences=off)
    assert decide(common(now, purpose="service")).rule == "preferences"
    assert decide(common(now, purpose="transactional")).action == "send"


def test_blackouts_defer_or_skip_by_region_and_purpose() -> None:
    now = at(CHICAGO, "2027-12-25 12:00")
    holiday = Blackout(
        id=1,
        name="Christmas",
        regions=["US"],
        purposes=["marketing"],
        starts_at=at(CHICAGO, "2027-12-25 00:00"),
        ends_at=at(CHICAGO, "2027-12-26 00:00"),
    )
    incident = holiday.model_copy(update={"name": "incident", "action": "skip", "purposes": []})
    email = partial(facts, channel="email", blackouts=(holiday,))
    assert decide(email(now)).until == at(CHICAGO, "2027-12-26 00:00")
    assert decide(email(now, purpose="service")).action == "send"
    assert (
        decide(
            facts(
                now,
                channel="email",
                jurisdiction="DE",
                tz="Europe/Berlin",
                consents=(grant("express", channel="email"),),
                blackouts=(holiday,),
            )
        ).action
        == "send"
    )
    assert decide(facts(now, channel="email", blackouts=(incident,))).action == "skip"
    assert (
        decide(facts(now, channel="email", purpose="critical", blackouts=(incident,))).action
        == "send"
    )


def test_caps_count_higher_priority_sends_but_never_lower() -> None:
    sms_daily = PolicyConfig(
        caps=[
            Cap(
                name="1 SMS a day",
                max=1,
                per=timedelta(days=1),
                purposes=["marketing", "service"],
                channels=["sms"],
            )
        ]
    )
    now = at(CHICAGO, "2027-01-05 12:00")
    marketing_sent = (sent("2027-01-05 09:00", tz=CHICAGO),)
    service_sent = (sent("2027-01-05 09:00", tz=CHICAGO, purpose="service"),)
    assert (
        decide(facts(now, purpose="service", config=sms_daily, recent=marketing_sent)).action
        == "send"
    )
    blocked = decide(facts(now, consents=WRITTEN, config=sms_daily, recent=service_sent))
    assert (blocked.action, blocked.until) == ("wait", at(CHICAGO, "2027-01-06 09:00"))


def test_lower_priority_waits_up_to_its_maximum_deferral_then_is_skipped() -> None:
    weekly = PolicyConfig(caps=[Cap(name="3 marketing a week", max=3, per=timedelta(days=7))])
    now = at(CHICAGO, "2027-01-05 12:00")
    week = tuple(sent(f"2027-01-0{d} 10:00", tz=CHICAGO, channel="email") for d in (1, 2, 3))
    email = partial(facts, channel="email", config=weekly, recent=week)

    fresh = decide(email(now))
    waited_an_hour = decide(email(now, waiting_since=now - timedelta(hours=1)))
    waited_three_hours = decide(email(now, waiting_since=now - timedelta(hours=3)))

    assert (fresh.action, fresh.until) == ("wait", at(CHICAGO, "2027-01-08 10:00"))
    assert "3 of 3 in 7d" in fresh.reason
    assert waited_an_hour.action == "wait"  # 2d23h in all: within marketing's 3d
    assert waited_three_hours.action == "skip"  # 3d1h
    assert waited_three_hours.rule == "maximum deferral (frequency cap: 3 marketing a week)"


def test_no_push_within_four_hours_of_an_email() -> None:
    fatigue = PolicyConfig(
        min_intervals=[
            MinInterval(
                name="push after email", after="email", before="push", gap=timedelta(hours=4)
            )
        ]
    )
    now = at(CHICAGO, "2027-01-05 12:00")
    emailed = (sent("2027-01-05 10:30", tz=CHICAGO, channel="email"),)
    decision = decide(facts(now, channel="push", config=fatigue, recent=emailed))
    assert (decision.action, decision.until) == ("wait", at(CHICAGO, "2027-01-05 14:30"))


def test_critical_messages_bypass_quiet_hours_but_a_journey_window_still_holds() -> None:
    night = at(CHICAGO, "2027-01-05 23:00")
    assert decide(facts(night, purpose="critical")).action == "send"
    window = SendWindow(start=parse_time_of_day("09:00"), end=parse_time_of_day("17:00"))
    business = Facts(
        contact=ContactFacts(key="c1", jurisdiction="US-TX", timezone=CHICAGO),
        message=Message(channel="email", purpose="critical", topic="security", windows=[window]),
        now=night,
        config=CONFIG,
    )
    assert decide(business).until == at(CHICAGO, "2027-01-06 09:00")


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop",
        " Stop. ",
        "STOPALL",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
        "REVOKE",
        "OPT OUT",
        "opt-out",
        "Opt  Out",
    ],
)
def test_every_stop_variant_is_an_opt_out(text: str) -> None:
    assert classify(text) == "stop"


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("START", "start"),
        ("unstop", "start"),
        ("help", "help"),
        ("stop it please", None),
        ("Stopping by later", None),
        ("", None),
    ],
)
def test_other_keywords_and_ordinary_messages(text: str, keyword: str | None) -> None:
    assert classify(text) == keyword


def test_a_send_claimed_by_a_concurrent_attempt_with_a_later_clock_still_counts() -> None:
    weekly = PolicyConfig(caps=[Cap(name="1 a week", max=1, per=timedelta(days=7))])
    now = at(CHICAGO, "2027-01-05 12:00:00")
    ahead = (
        RecentSend(
            channel="email", purpose="marketing", topic="deals", at=now + timedelta(milliseconds=40)
        ),
    )
    decision = decide(facts(now, channel="email", config=weekly, recent=ahead))
    assert (decision.action, decision.rule) == (
        "skip",
        "maximum deferral (frequency cap: 1 a week)",
    )


def test_quiet_hours_hold_a_message_however_long_and_never_drop_it() -> None:
    window = SendWindow(
        start=parse_time_of_day("09:00"), end=parse_time_of_day("17:00"), weekdays=["mon", "fri"]
    )
    friday_evening = at(CHICAGO, "2027-01-08 18:00")  # the next opening is Monday 09:00
    for purpose in ("critical", "transactional", "service"):
        decision = decide(
            Facts(
                contact=ContactFacts(key="c1", jurisdiction="US-TX", timezone=CHICAGO),
                message=Message(channel="email", purpose=purpose, topic="t", windows=[window]),
                now=friday_evening,
                config=CONFIG,
            )
        )
        assert (decision.action, decision.until) == ("wait", at(CHICAGO, "2027-01-11 09:00"))


def test_a_step_window_narrows_the_journey_window_instead_of_replacing_it() -> None:
    journey = SendWindow(start=parse_time_of_day("09:00"), end=parse_time_of_day("17:00"))
    step = SendWindow(start=parse_time_of_day("07:00"), end=parse_time_of_day("22:00"))
    decision = decide(
        Facts(
            contact=ContactFacts(key="c1", jurisdiction="US-TX", timezone=CHICAGO),
            message=Message(channel="email", purpose="service", topic="t", windows=[journey, step]),
            now=at(CHICAGO, "2027-01-05 08:00"),
            config=CONFIG,
        )
    )
    assert decision.until == at(CHICAGO, "2027-01-05 09:00")


def test_transactional_messages_heed_their_own_and_channel_wide_revocations_only() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    objection = grant(None, purpose=None, action="object", channel="email")
    own = revoke(purpose="transactional", channel="email")
    one_topic = revoke(purpose=None, topic="receipts", channel="email")
    email = partial(facts, now, channel="email", purpose="transactional")
    assert decide(email(consents=(objection,))).action == "send"
    assert decide(email(consents=(own,))).action == "skip"
    assert decide(email(consents=(one_topic,), topic="receipts")).action == "skip"
    assert decide(email(consents=(one_topic,), topic="orders")).action == "send"


def test_a_revocation_stamped_by_a_clock_running_ahead_is_honored_at_once() -> None:
    now = at(CHICAGO, "2027-01-05 12:00")
    ahead = revoke(channel="email", effective="2027-01-05T18:00:30")  # 30 s after `now`
    assert decide(facts(now, channel="email", consents=(ahead,))).action == "skip"


def test_an_objection_on_one_channel_holds_on_every_channel() -> None:
    interest = grant("legitimate_interest", channel="sms", id=1)
    objection = grant(None, channel="email", id=2, action="object", effective="2021-01-01")
    now = at("Europe/Berlin", "2027-01-05 12:00")
    decision = decide(
        facts(now, jurisdiction="DE", tz="Europe/Berlin", consents=(interest, objection))
    )
    assert decision.action == "skip" and "objected to direct marketing" in decision.reason


@pytest.mark.parametrize(
    ("later", "still"),
    [("implied_inquiry", "express"), ("implied_inquiry", "implied_purchase")],
)
def test_a_weaker_later_grant_does_not_shorten_a_stronger_one(later: str, still: str) -> None:
    first = grant(still, channel="email", id=1, effective="2026-01-01")  # type: ignore[arg-type]
    second = grant(later, channel="email", id=2, effective="2026-06-01")  # type: ignore[arg-type]
    after_inquiry_lapsed = at("America/Toronto", "2027-06-01 12:00")
    decision = decide(
        facts(
            after_inquiry_lapsed,
            jurisdiction="CA-ON",
            tz="America/Toronto",
            channel="email",
            consents=(first, second),
        )
    )
    assert decision.action == "send"
    assert decision.inputs["consent_basis"] == still


def test_a_cap_of_zero_skips_and_an_empty_weekday_list_is_refused() -> None:
    none_allowed = PolicyConfig(caps=[Cap(name="no promos", max=0, per=timedelta(days=1))])
    decision = decide(facts(at(CHICAGO, "2027-01-05 12:00"), channel="email", config=none_allowed))
    assert (decision.action, decision.reason) == ("skip", "no promos allows no such message")
    with pytest.raises(ValueError, match="at least 1 item"):
        SendWindow.model_validate({"start": "09:00", "end": "17:00", "weekdays": []})


def test_a_partial_max_deferral_keeps_the_other_defaults() -> None:
    config = PolicyConfig.model_validate({"max_deferral": {"marketing": "5d"}})
    assert config.max_deferral["marketing"] == timedelta(days=5)
    assert config.max_deferral["service"] == timedelta(days=1)


def test_a_skip_blackout_outranks_an_earlier_ending_deferral() -> None:
    now = at(CHICAGO, "2027-12-25 12:00")
    defer = Blackout(
        id=1, name="holiday", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1)
    )
    skip = defer.model_copy(
        update={"id": 2, "name": "incident", "action": "skip", "ends_at": now + timedelta(days=1)}
    )
    decision = decide(facts(now, channel="email", blackouts=(defer, skip)))
    assert (decision.action, decision.rule) == ("skip", "blackout: incident")
