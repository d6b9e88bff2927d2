"""Identities: emails and phones normalised, references resolved to contacts by every kind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import AUDIT_KEY
from typer.testing import CliRunner

from tidings.db import contacts
from tidings.db.engine import Database
from tidings.db.identities import resolve
from tidings.errors import InputError, UnknownContactError, UnknownReferenceError
from tidings.identities import normalize_email, normalize_phone, parse_reference
from tidings.models.contact import IdentifyContact, phone_context
from tidings.settings import Settings
from tidings.starter.cli import app

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, audit_key=AUDIT_KEY)
    yield database
    database.dispose()


def identify(db: Database, region: str = "", **fields: object) -> None:
    data = IdentifyContact.model_validate(fields, context=phone_context(region))
    with db.session() as session:
        contacts.upsert_contact(session=session, data=data, now=NOW)


def resolved(db: Database, ref: str, region: str | None = None) -> str:
    with db.session() as session:
        return resolve(session=session, ref=ref, default_region=region)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  ada.l@example.co.uk ", "ada.l@example.co.uk"),
        ("jöhn@exämple.com", "jöhn@exämple.com"),
    ],
)
def test_emails_are_checked_and_lower_cased_so_one_address_is_one_identity(
    written: str, stored: str
) -> None:
    assert normalize_email(written) == stored


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("not-an-email", "An email address must have an @-sign"),
        ("ada@localhost", "It should have a period"),
        ("ada@@example.com", "is not an email address"),
        ("ada@example", "It should have a period"),
    ],
)
def test_a_bad_email_is_refused_naming_it_and_why(written: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_email(written)
    assert f"{written!r} is not an email address" in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("written", "region", "stored"),
    [
        ("+1 (415) 555-0123", None, "+14155550123"),
        ("+44 7700 900123", None, "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("+447700900123", "US", "+447700900123"),  # a + number ignores the region
    ],
)
def test_phones_are_stored_in_e164(written: str, region: str | None, stored: str) -> None:
    assert normalize_phone(written, region) == stored


def test_a_number_without_plus_is_refused_without_a_default_region() -> None:
    with pytest.raises(ValueError) as caught:
        normalize_phone("07700 900123")
    message = str(caught.value)
    assert "'07700 900123' is not a phone number in international form" in message
    assert "TIDINGS_DEFAULT_PHONE_REGION" in message


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("+44 12", "not a possible phone number for its country code (+44)"),
        ("+999 1234567", "is not a phone number"),
        ("+1 call me", "is not a phone number"),
    ],
)
def test_an_impossible_phone_number_is_refused_naming_it(written: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_phone(written)
    assert repr(written) in str(caught.value)
    assert reason in str(caught.value)


def test_the_default_phone_region_setting_is_checked() -> None:
    assert Settings(default_phone_region="gb").default_phone_region == "GB"
    with pytest.raises(ValueError, match="'XX' is not a phone region"):
        Settings(default_phone_region="XX")


@pytest.mark.parametrize(
    "key",
    ["email:ada", "phone:07700900123", "device:ios-1", "anonymous:a1", "external:stripe:cus_1"],
)
def test_a_contact_key_can_never_be_mistaken_for_a_reference(key: str) -> None:
    with pytest.raises(ValueError, match=r"names an identity \(.*:VALUE\) rather than a key"):
        IdentifyContact(key=key)


def test_keys_with_other_colons_stay_valid() -> None:
    assert IdentifyContact(key="crm:42").key == "crm:42"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("email:nope", "the contact reference 'email:nope' is malformed: 'nope' is not an email"),
        ("phone:12", "'12' is not a phone number in international form"),
        ("external:cus_1", "names no source system; write external references as external:"),
        ("external:Str ipe:cus_1", "'Str ipe' is not a source system name"),
        ("push:short", "'short' is not a valid push token"),
    ],
)
def test_a_malformed_reference_is_refused_naming_it(ref: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_reference(ref)
    assert message in str(caught.value)


def test_every_kind_of_reference_resolves_to_its_contact(db: Database) -> None:
    identify(
        db,
        region="GB",
        key="cus-7",
        emails=["Ada@Example.com"],
        phones=["07700 900123"],
        push_tokens=["fcm-token-123"],
        devices=["ios-7f3a"],
        anonymous_ids=["a1b2c3"],
        external_ids={"Stripe": "cus_42", "zendesk": "9912"},
    )
    refs = [
        "cus-7",
        "email:ADA@example.com",
        "phone:+447700900123",
        "phone:+44 7700 900123",
        "push:fcm-token-123",
        "device:ios-7f3a",
        "anonymous:a1b2c3",
        "external:stripe:cus_42",
        "external:zendesk:9912",
    ]
    assert {ref: resolved(db, ref) for ref in refs} == dict.fromkeys(refs, "cus-7")
    assert resolved(db, "phone:07700 900123", region="GB") == "cus-7"
    with db.session() as session:
        view = contacts.get_contact(session=session, key="cus-7")
    assert view.external_ids == {"stripe": "cus_42", "zendesk": "9912"}
    assert (view.devices, view.anonymous_ids) == (["ios-7f3a"], ["a1b2c3"])


def test_an_identity_nobody_has_is_an_unknown_contact_naming_the_reference(db: Database) -> None:
    identify(db, key="cus-7", external_ids={"stripe": "cus_42"})
    with pytest.raises(UnknownReferenceError) as caught:
        resolved(db, "external:stripe:cus_43")
    assert isinstance(caught.value, UnknownContactError)
    assert "no contact has the identity 'external:stripe:cus_43'" in str(caught.value)
    with pytest.raises(UnknownContactError, match="tidings identify nobody --email"):
        resolved(db, "nobody")
    with pytest.raises(InputError, match=r"to name a contact by its email, write email:a@b\.co"):
        resolved(db, "a@b.co")


def test_the_same_external_id_system_cannot_give_one_contact_two_ids(db: Database) -> None:
    identify(db, key="cus-7", external_ids={"stripe": "cus_42"})
    with pytest.raises(InputError) as caught:
        identify(db, key="cus-7", external_ids={"stripe": "cus_43"}, emails=["x@example.com"])
    assert "already has stripe id 'cus_42', so stripe id 'cus_43' cannot be its too" in str(
        caught.value
    )
    with db.session() as session:
        assert contacts.get_contact(session=session, key="cus-7").emails == []


def test_an_identity_of_another_contact_is_refused_pointing_at_merge(db: Database) -> None:
    identify(db, key="cus-7", devices=["ios-7f3a"])
    with pytest.raises(InputError) as caught:
        identify(db, key="cus-8", devices=["ios-7f3a"])
    assert "device:ios-7f3a already belongs to contact 'cus-7'" in str(caught.value)
    assert "tidings contacts merge cus-7 cus-8" in str(caught.value)


def test_the_cli_resolves_a_reference(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    database = Database(settings.database_url)
    identify(database, key="cus-7", emails=["ada@example.com"])
    database.dispose()
    runner = CliRunner()
    found = runner.invoke(
        app, ["contacts", "resolve", "email:Ada@example.com", "--data-dir", str(tmp_path)]
    )
    missing = runner.invoke(
        app, ["contacts", "resolve", "email:bob@example.com", "--data-dir", str(tmp_path)]
    )
    assert (found.exit_code, found.output) == (0, "cus-7\n")
    assert missing.exit_code == 1
    assert "no contact has the identity 'email:bob@example.com'" in missing.output
