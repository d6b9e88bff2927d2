"""Bad input through the Python client: one clear message, and nothing written or started."""

from __future__ import annotations

import pytest
from pydantic import JsonValue
from sqlmodel import select
from support import Stack

from tidings.errors import InputError, UnknownContactError
from tidings.models.tables import Contact, EventRecord

CART: dict[str, JsonValue] = {
    "total": 150.0,
    "currency": "EUR",
    "cart_url": "https://shop.example/cart/9",
}


def stored(stack: Stack, table: type[Contact] | type[EventRecord]) -> list[object]:
    with stack.database.session() as session:
        return list(session.exec(select(table)).all())


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("", "is empty"),
        ("x" * 129, "is 129 characters long"),
        ("ann@example.com", "looks like an email or phone number"),
        ("+14155550123", "looks like an email or phone number"),
        ("has space", "has other characters"),
    ],
)
async def test_a_bad_contact_key_is_refused(stack: Stack, key: str, expected: str) -> None:
    with pytest.raises(InputError, match="invalid contact: key: ") as caught:
        await stack.client.identify(key, jurisdiction="US", emails=["ann@example.com"])
    assert expected in str(caught.value)
    assert stored(stack, Contact) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"emails": ["not-an-email"]}, "emails.0: 'not-an-email' is not an email address"),
        ({"phones": ["555-0123"]}, "write it like +14155550123"),
        ({"timezone": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA time zone"),
        ({"locale": "English"}, "'English' is not a locale"),
    ],
)
async def test_bad_identities_and_settings_are_refused(
    stack: Stack, contact_key: str, fields: dict[str, object], expected: str
) -> None:
    with pytest.raises(InputError) as caught:
        await stack.client.identify(contact_key, **fields)  # type: ignore[arg-type]
    assert expected in str(caught.value)
    assert stored(stack, Contact) == []


async def test_an_event_for_an_unknown_contact_is_refused(stack: Stack) -> None:
    with pytest.raises(UnknownContactError, match="tidings identify nobody --email"):
        await stack.client.track("nobody", "signed_up")
    assert stored(stack, EventRecord) == []


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({**CART, "total": "lots"}, "property 'total' must be a number, got 'lots'"),
        ({"total": 30, "currency": "EUR"}, "property 'cart_url' is required (string)"),
        ({**CART, "item_count": 2.5}, "property 'item_count' must be an integer"),
    ],
)
async def test_a_malformed_event_names_the_property_and_the_journey(
    stack: Stack, contact_key: str, properties: dict[str, object], expected: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["m@example.com"])
    with pytest.raises(InputError) as caught:
        await stack.client.track(contact_key, "cart_updated", properties)  # type: ignore[arg-type]
    assert expected in str(caught.value)
    assert "declared by journey 'cart-abandonment'" in str(caught.value)
    assert stored(stack, EventRecord) == []
    assert stack.journey_runs(contact_key) == []


@pytest.mark.parametrize(
    ("name", "properties", "expected"),
    [
        ("signed up!", {}, "'signed up!' is not a valid event name"),
        ("big", {"blob": "x" * 40_000}, "the limit is 32768"),
        ("deep", {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "nest deeper than 5 levels"),
    ],
)
async def test_bad_event_names_and_oversized_properties_are_refused(
    stack: Stack, contact_key: str, name: str, properties: dict[str, object], expected: str
) -> None:
    await stack.client.identify(contact_key)
    with pytest.raises(InputError) as caught:
        await stack.client.track(contact_key, name, properties)  # type: ignore[arg-type]
    assert expected in str(caught.value)
    assert stored(stack, EventRecord) == []


async def test_status_lists_the_journeys_and_what_each_waits_for(
    stack: Stack, contact_key: str
) -> None:
    await stack.client.identify(contact_key, jurisdiction="US", emails=["s@example.com"])
    await stack.client.track(contact_key, "cart_updated", CART)
    await stack.client.track(contact_key, "session_started")

    journeys = {j.journey: j for j in await stack.client.status(contact_key)}

    assert set(journeys) == {"cart-abandonment", "win-back"}
    cart = journeys["cart-abandonment"].status
    assert cart is not None
    assert (cart.step_id, cart.waiting_for) == ("wait-1h", "timer")
    assert cart.details.startswith("Waiting 1h, until ")
    watch = journeys["win-back"].status
    assert watch is not None and watch.waiting_for == "event:session_started"
    assert "then `we-miss-you`" in watch.details
