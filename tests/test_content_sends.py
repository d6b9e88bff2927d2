"""Content at send time: headers on the wire, the unsubscribe link, preview equals sent,
versions pinned while a journey sleeps, stale translations, lint at send."""

from __future__ import annotations

import mailbox
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from pydantic import JsonValue
from sqlmodel import select
from support import (
    AUDIT_KEY,
    AUTHOR,
    EXAMPLE_TEMPLATES,
    activity_env,
    copy_tree,
    make_sender,
    publish,
    running_stack,
)
from temporalio.testing import WorkflowEnvironment

from tidings.activities.send import DELIVERY_HEADER, MessageSender
from tidings.content.files import load_library
from tidings.content.unsubscribe import make_token, unsubscribe_url
from tidings.db import consent, preferences, templates
from tidings.db.contacts import upsert_contact
from tidings.db.engine import Database
from tidings.models.contact import IdentifyContact
from tidings.models.tables import AuditRecord, Delivery
from tidings.models.workflow_io import SendInput
from tidings.settings import Settings
from tidings.starter.policy_admin import PolicyAdmin
from tidings.starter.ports import free_port
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink
from tidings.starter.template_admin import TemplateAdmin

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
CART: dict[str, JsonValue] = {
    "total": 1234.5,
    "currency": "EUR",
    "cart_url": "https://shop.example/cart/7",
}
SECRET = "test-secret"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'app.db'}", audit_key=AUDIT_KEY)
    with db.session() as session:
        for key, email, locale, jurisdiction in (
            ("us-1", "ann@example.com", None, "US"),
            ("fr-1", "marie@example.fr", "fr-CA", "CA-QC"),
        ):
            upsert_contact(
                session=session,
                data=IdentifyContact(
                    key=key,
                    emails=[email],
                    locale=locale,
                    jurisdiction=jurisdiction,
                    traits={"first_name": "Ann" if key == "us-1" else "Marie", "ssn": "x"},
                ),
                now=NOW,
            )
    yield db
    db.dispose()


@pytest.fixture
def sender(database: Database, smtp: SmtpSink, tmp_path: Path) -> MessageSender:
    return make_sender(database, smtp, tmp_path, secret_key=SECRET)


def send_input(
    template: str = "cart-reminder",
    *,
    contact: str = "us-1",
    purpose: str = "marketing",
    properties: dict[str, JsonValue] | None = None,
    key: str = "k1",
    **changes: object,
) -> SendInput:
    event = {
        "event_id": "e1",
        "name": "cart_updated",
        "properties": CART if properties is None else properties,
        "occurred_at": NOW,
    }
    return SendInput.model_validate(
        {
            "idempotency_key": key,
            "journey": "cart-abandonment",
            "version": 1,
            "step_id": "reminder",
            "contact_key": contact,
            "template": template,
            "purpose": purpose,
            "topic": "cart",
            "trigger": event,
            "event": event,
            "scheduled_at": NOW,
            **changes,
        }
    )


def raw_messages(smtp: SmtpSink) -> list[EmailMessage]:
    box = mailbox.Maildir(smtp.maildir_path, factory=None, create=False)
    found = []
    for key in box.iterkeys():
        parsed = message_from_bytes(box.get_bytes(key), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_marketing_email_carries_rfc_8058_one_click_headers_and_the_postal_address(
    sender: MessageSender, smtp: SmtpSink
) -> None:
    result = activity_env().run(sender.send_email, send_input())

    assert result.status == "sent", result.detail
    [message] = raw_messages(smtp)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    link = str(message["List-Unsubscribe"])
    assert link.startswith("<http://127.0.0.1:8080/unsubscribe/") and link.endswith(">")
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    url = link[1:-1]
    text, html = body(message, "plain"), body(message, "html")
    for part in (text, html):
        assert url in part  # the same link in the body as in the header
        assert "548 Market St, San Francisco, CA 94104" in part  # CAN-SPAM
    assert "€1,234.50" in text  # babel, en
    # The brand layout's stylesheet, inlined (mail clients drop <style> blocks).
    assert '<div class="brand" style="font-size: 20px;font-weight: bold' in html
    assert "<style>" not in html


def test_service_mail_has_no_unsubscribe_headers(sender: MessageSender, smtp: SmtpSink) -> None:
    result = activity_env().run(
        sender.send_email, send_input("welcome", purpose="service", properties={})
    )

    assert result.status == "sent", result.detail
    [message] = raw_messages(smtp)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    assert str(message["Subject"]) == "Welcome to Acme, Ann!"
    # The preheader is the hidden first text of the HTML body.
    assert "display:none" in body(message, "html").split("<p>")[0]


def test_a_french_canadian_contact_gets_the_french_translation(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    activity_env().run(
        sender.send_email, send_input("welcome", contact="fr-1", purpose="service", properties={})
    )

    [message] = raw_messages(smtp)
    assert str(message["Subject"]) == "Bienvenue chez Acme, Marie !"
    [row] = rows(database)
    assert (row.template, row.template_version, row.locale) == ("welcome", 1, "fr")


def test_card_numbers_in_event_data_stop_the_send_at_send_time_lint(
    sender: MessageSender, smtp: SmtpSink, database: Database
) -> None:
    leaky = {**CART, "cart_url": "https://shop.example/cart/4111111111111111"}

    result = activity_env().run(sender.send_email, send_input(properties=leaky))

    assert result.status == "failed"
    assert "sensitive.card-number" in result.detail and "…1111" in result.detail
    assert "4111111111111111" not in result.detail  # the report does not leak it again
    assert raw_messages(smtp) == []
    assert [r.status for r in rows(database)] == ["failed"]


def test_an_unknown_template_fails_the_send_and_says_how_to_fix_it(
    sender: MessageSender, smtp: SmtpSink
) -> None:
    result = activity_env().run(sender.send_email, send_input("no-such-template"))

    assert result.status == "failed"
    assert "template 'no-such-template' is not in the repository" in result.detail
    assert "tidings templates push" in result.detail


def test_a_pushed_but_unapproved_template_is_not_sent(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    sender = make_sender(database, smtp, tmp_path)
    copy = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (copy / "welcome.yaml").write_text(
        (copy / "welcome.yaml").read_text().replace("Welcome to", "Hello from")
    )
    with database.session() as session:
        templates.push(session=session, library=load_library(copy), actor=AUTHOR, now=NOW)

    activity_env().run(sender.send_email, send_input("welcome", purpose="service", properties={}))

    [message] = raw_messages(smtp)
    assert str(message["Subject"]).startswith("Welcome to")  # v1, the approved one
    drafts = make_sender(database, smtp, tmp_path, send_drafts=True, publish_templates=False)
    draft = activity_env().run(
        drafts.send_email, send_input("welcome", purpose="service", properties={}, key="k2")
    )
    [sent] = [m for m in raw_messages(smtp) if m[DELIVERY_HEADER] == draft.delivery_id]
    assert str(sent["Subject"]).startswith("Hello from")


async def test_a_stale_translation_is_used_and_the_audit_says_so(
    database: Database, smtp: SmtpSink, tmp_path: Path
) -> None:
    sender = make_sender(database, smtp, tmp_path)
    copy = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (copy / "welcome.yaml").write_text(
        (copy / "welcome.yaml").read_text().replace("Create your first", "Start your first")
    )
    publish(database, copy)  # v2 in English; the French still translates v1

    activity_env().run(
        sender.send_email, send_input("welcome", contact="fr-1", purpose="service", properties={})
    )

    [message] = raw_messages(smtp)
    assert str(message["Subject"]).startswith("Bienvenue")
    with database.session() as session:
        [audit] = session.exec(select(AuditRecord).where(AuditRecord.kind == "content")).all()
    assert audit.contact_key == "fr-1"
    assert "used stale translation: the fr translation (revision 1) is of version 1, not 2" in (
        audit.detail
    )
    [row] = rows(database)
    assert (row.template_version, row.locale) == (2, "fr")
    timeline = await PolicyAdmin(database, sms_help_text="").explain("fr-1")
    lines = [entry.what for entry in timeline]
    assert "email welcome v2 [fr] sent" in lines
    assert any(line.startswith("content welcome v2 fr: used stale translation") for line in lines)


def rows(database: Database) -> list[Delivery]:
    with database.session() as session:
        return list(session.exec(select(Delivery)).all())


# Preview


async def test_preview_shows_exactly_what_is_sent(
    sender: MessageSender, smtp: SmtpSink, database: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, secret_key=SECRET)
    preview = TemplateAdmin(database, settings).preview(
        "cart-reminder",
        contact_key="us-1",
        topic="cart",
        purpose="marketing",
        properties=CART,
    )

    activity_env().run(sender.send_email, send_input())

    [message] = raw_messages(smtp)
    assert preview.parts["subject"] == str(message["Subject"])
    assert preview.parts["text"].strip() == body(message, "plain").strip()
    assert preview.parts["html"].strip() == body(message, "html").strip()
    for name, value in preview.headers.items():
        assert str(message[name]) == value
    assert (preview.version, preview.locale, preview.to) == (1, "en", "ann@example.com")


async def test_preview_counts_sms_segments(database: Database, tmp_path: Path) -> None:
    publish(database)
    admin = TemplateAdmin(database, Settings(data_dir=tmp_path))
    with database.session() as session:
        upsert_contact(
            session=session,
            data=IdentifyContact(key="sms-1", phones=["+14155550100"], jurisdiction="US"),
            now=NOW,
        )

    preview = admin.preview(
        "cart-reminder", contact_key="sms-1", channel="sms", topic="cart", properties=CART
    )

    assert preview.to == "+14155550100"
    text = preview.parts["text"]
    assert preview.sms is not None
    # "€" is in GSM-7's extension table: two septets, still one segment.
    assert (preview.sms.encoding, preview.sms.units, preview.sms.segments) == (
        "GSM-7",
        len(text) + 1,
        1,
    )
    assert "Reply STOP to opt out" in preview.parts["text"]


# The unsubscribe link, over real HTTP


@pytest.fixture
async def service(database: Database) -> AsyncIterator[str]:
    app = create_app(database=database, secret_key=SECRET, company="Acme", sms_help_text="")
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield url


def link(base: str, *, contact: str = "us-1", topic: str = "cart") -> str:
    token = make_token(SECRET, contact_key=contact, topic=topic, template="cart-reminder")
    return unsubscribe_url(base, token)


async def test_one_click_unsubscribe_revokes_marketing_email_in_the_ledger(
    service: str, database: Database
) -> None:
    async with httpx.AsyncClient() as http:
        # What a mailbox provider sends for RFC 8058 (no cookies, no page).
        answer = await http.post(
            link(service),
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Gmail"},
        )

    assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    with database.session() as session:
        [entry] = consent.ledger(session=session, contact_key="us-1", channel="email")
    assert (entry.action, entry.purpose, entry.source) == (
        "revoke",
        "marketing",
        "unsubscribe-link",
    )
    assert entry.proof == {"template": "cart-reminder", "via": "one-click", "user_agent": "Gmail"}


async def test_the_unsubscribe_page_offers_the_topic_and_stopping_it_sets_a_preference(
    service: str, database: Database
) -> None:
    async with httpx.AsyncClient() as http:
        page = await http.get(link(service))
        answer = await http.post(link(service), data={"scope": "topic"})

    assert page.status_code == 200 and "Stop emails about cart" in page.text
    assert "ann@example.com" not in page.text  # a forwarded link reveals no one
    assert answer.status_code == 200
    with database.session() as session:
        [preference] = preferences.preferences_for(session=session, contact_key="us-1")
        assert consent.ledger(session=session, contact_key="us-1") == []
    assert (preference.channel, preference.topic, preference.subscribed) == ("email", "cart", False)


async def test_a_tampered_unsubscribe_link_is_refused_with_what_to_do(
    service: str, database: Database
) -> None:
    forged = link(service, contact="fr-1")[:-3] + "abc"
    async with httpx.AsyncClient() as http:
        page = await http.get(forged)
        post = await http.post(forged, content="List-Unsubscribe=One-Click")

    assert page.status_code == post.status_code == 400
    assert "Open the link from the email again" in page.text
    with database.session() as session:
        assert consent.ledger(session=session, contact_key="fr-1") == []


async def test_unsubscribing_a_contact_that_no_longer_exists_still_succeeds(service: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(link(service, contact="gone"), data={"scope": "all"})
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text


async def test_after_one_click_the_next_marketing_email_is_skipped(
    sender: MessageSender, smtp: SmtpSink, database: Database, service: str
) -> None:
    activity_env().run(sender.send_email, send_input())
    [message] = raw_messages(smtp)
    async with httpx.AsyncClient() as http:
        url = str(message["List-Unsubscribe"])[1:-1].replace("http://127.0.0.1:8080", service)
        await http.post(url, data={"List-Unsubscribe": "One-Click"})

    again = activity_env().run(sender.send_email, send_input(key="k2"))

    assert again.status == "skipped"
    assert len(raw_messages(smtp)) == 1
    assert message[DELIVERY_HEADER] is not None


# Versions while a journey sleeps

PINNED_JOURNEY = """\
name: pinned
version: 1
trigger: {event: joined}
steps:
  - id: first
    wait: 2d
  - id: pinned-send
    send: {template: check-in, version: 1, purpose: service, topic: onboarding}
  - id: latest-send
    send: {template: check-in, purpose: service, topic: onboarding}
"""


async def test_a_step_that_pins_a_version_keeps_it_while_a_newer_one_is_approved(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "pinned.yaml").write_text(PINNED_JOURNEY)
    copy = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journeys,
        templates_dir=copy,
    ) as stack:
        await stack.client.identify(contact_key, jurisdiction="US", emails=["pin@example.com"])
        await stack.client.track(contact_key, "joined")
        # The time-skipping server holds the clock until we wait for the result.
        # While the journey sleeps, marketing rewrites the check-in and it is approved.
        source = (copy / "check-in.yaml").read_text()
        (copy / "check-in.yaml").write_text(source.replace("How is it going", "Need a hand"))
        publish(stack.database, copy)

        await stack.result("pinned", contact_key)

    subjects = {s.step_id: s.subject for s in stack.sent()}
    assert subjects == {
        "pinned-send": "How is it going, there?",
        "latest-send": "Need a hand, there?",
    }
    versions = {d.step_id: d.template_version for d in stack.deliveries()}
    assert versions == {"pinned-send": 1, "latest-send": 2}


def test_the_example_templates_and_translation_pass_review_and_are_approved(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'review.db'}")
    try:
        pushed = publish(database, EXAMPLE_TEMPLATES)
        with database.session() as session:
            statuses = {r.template: r.status for r in templates.versions(session=session)}
            [french] = templates.translations(session=session, template="welcome")
    finally:
        database.dispose()
    assert len(statuses) == len(load_library(EXAMPLE_TEMPLATES).templates)
    assert set(statuses.values()) == {"approved"}
    assert (french.locale, french.source_version, french.status) == ("fr", 1, "approved")
    assert {p.locale for p in pushed} == {None, "fr"}
