"""Content rendering: locales and babel formatting, declared fields and fallbacks, lookups
over real HTTP, template injection, email parts, SMS sizes, translations."""

from __future__ import annotations

import json
import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent
from pydantic import JsonValue, ValidationError
from support import EXAMPLE_TEMPLATES

from tidings.content.environment import (
    LOCALE_VAR,
    TIMEZONE_VAR,
    check_locale,
    locale_chain,
    make_environment,
)
from tidings.content.files import TemplateSource, load_library, load_source
from tidings.content.lookups import LookupClient
from tidings.content.render import (
    ContactFields,
    Inputs,
    Rendered,
    RenderError,
    declared_data,
    render,
)
from tidings.content.sms import sms_size
from tidings.content.spec import Lookup, StoredTemplate, TemplateSpec
from tidings.errors import SpecError
from tidings.models.events import JourneyEvent

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
BRAND: dict[str, JsonValue] = {"company": "Acme", "postal_address": "1 Main St, Springfield"}
CONTACT_KEY = "c-render-1"


# Helpers


def journey_event(properties: dict[str, JsonValue] | None = None) -> JourneyEvent:
    return JourneyEvent(
        event_id="ev-1", name="cart_abandoned", properties=properties or {}, occurred_at=NOW
    )


def make_inputs(
    *,
    traits: dict[str, JsonValue] | None = None,
    properties: dict[str, JsonValue] | None = None,
    timezone: str | None = None,
    lookups: dict[str, JsonValue] | None = None,
    brand: dict[str, JsonValue] | None = None,
) -> Inputs:
    event = journey_event(properties)
    return Inputs(
        contact=ContactFields(key=CONTACT_KEY, timezone=timezone, traits=traits or {}),
        event=event,
        trigger=event,
        lookups=lookups or {},
        brand=BRAND if brand is None else brand,
    )


def stored_template(spec: dict[str, Any]) -> StoredTemplate:
    """A version as the database keeps it (no load-time checks: what render must cope with)."""
    return StoredTemplate(spec=TemplateSpec.model_validate(spec))


def write_source(
    directory: Path, name: str, text: str, partials: dict[str, str] | None = None
) -> TemplateSource:
    """A template authored as a YAML file and loaded with every load-time check."""
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_source(path, partials or {})


def render_source(
    stored: StoredTemplate,
    inputs: Inputs,
    *,
    channel: str = "email",
    locale: str = "en",
    template: str = "promo",
) -> Rendered:
    """Render the source content of a version, with its own fallback."""
    return render(
        stored,
        template=template,
        channel=channel,
        content=stored.spec,
        fallback=stored.spec.fallback,
        locale=locale,
        inputs=inputs,
    )


def spaces(text: str) -> str:
    """babel separates with (narrow) no-break spaces; compare as plain spaces."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def apply_filter(expression: str, value: Any, *, locale: str, timezone: str = "UTC") -> str:
    """`{{ value|<expression> }}` in the text environment, as render sets it up."""
    env = make_environment({}, html=False)
    template = env.from_string("{{ value|" + expression + " }}")
    return template.render({"value": value, LOCALE_VAR: locale, TIMEZONE_VAR: timezone})


def assert_deliverable(rendered: Rendered) -> None:
    """What render promises about every part it hands out."""
    for part, text in rendered.parts.items():
        assert "None" not in text, part
        assert "{{" not in text and "{%" not in text, part
    if rendered.channel == "email":
        assert rendered.parts["subject"].strip()


# 1. Locales


@pytest.mark.parametrize(
    ("preferred", "source", "chain"),
    [
        ("fr-CA", "en", ["fr-CA", "fr", "en"]),
        ("zh-Hant-TW", "en", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
        ("de", "en", ["de", "en"]),
        ("en-GB", "en", ["en-GB", "en"]),
        ("en", "en", ["en"]),
        (None, "fr", ["fr"]),
        ("", "de", ["de"]),
    ],
)
def test_locale_chain_falls_back_by_dropping_subtags_then_the_source_locale(
    preferred: str | None, source: str, chain: list[str]
) -> None:
    assert locale_chain(preferred, source) == chain


@pytest.mark.parametrize("tag", ["fr-CA", "pt-BR", "de", "en", "zh-Hant-TW"])
def test_check_locale_accepts_tags_babel_knows(tag: str) -> None:
    assert check_locale(tag) == tag


@pytest.mark.parametrize("tag", ["xx", "klingon", "xx-YY", "", "en_US", "fr-CA-x"])
def test_check_locale_rejects_unknown_or_malformed_tags_with_an_example(tag: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_locale(tag)
    assert str(caught.value) == (f"{tag!r} is not a locale babel knows; use a tag like fr-CA or de")


def test_a_source_with_an_unknown_locale_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        write_source(
            tmp_path,
            "promo",
            """
            source_locale: xx
            email: {subject: Hi, text: Hello}
            """,
        )
    [problem] = caught.value.problems
    assert "source_locale" in problem
    assert "'xx' is not a locale babel knows" in problem


# 2. babel formatting through the jinja filters

AMOUNT = 1234.5
BIG = 1234567.891
SHARE = 0.256
DAY = "2026-03-05"
MOMENT = "2026-01-01T02:30:00+00:00"
"""02:30 UTC on New Year's Day is still New Year's Eve in New York."""


@pytest.mark.parametrize(
    ("locale", "currency", "number", "percent"),
    [
        ("en", "€1,234.50", "1,234,567.891", "26%"),
        ("fr", "1 234,50 €", "1 234 567,891", "26 %"),
        ("de", "1.234,50 €", "1.234.567,891", "26 %"),
    ],
)
def test_number_filters_format_for_the_locale(
    locale: str, currency: str, number: str, percent: str
) -> None:
    shown_currency = apply_filter("format_currency('EUR')", AMOUNT, locale=locale)
    shown_number = apply_filter("format_number", BIG, locale=locale)
    shown_percent = apply_filter("format_percent", SHARE, locale=locale)

    assert spaces(shown_currency) == currency
    assert spaces(shown_number) == number
    assert spaces(shown_percent) == percent
    # Exactly babel's output, no-break spaces included (no float rounding on the way).
    assert shown_currency == format_currency(Decimal("1234.5"), "EUR", locale=locale)
    assert shown_number == format_decimal(Decimal("1234567.891"), locale=locale)
    assert shown_percent == format_percent(Decimal("0.256"), locale=locale)


def test_french_amounts_use_babel_narrow_no_break_spaces() -> None:
    assert apply_filter("format_currency('EUR')", AMOUNT, locale="fr") == "1\u202f234,50\xa0€"


@pytest.mark.parametrize(
    ("locale", "medium", "long"),
    [
        ("en", "Mar 5, 2026", "March 5, 2026"),
        ("fr", "5 mars 2026", "5 mars 2026"),
        ("de", "05.03.2026", "5. März 2026"),
    ],
)
def test_format_date_for_the_locale(locale: str, medium: str, long: str) -> None:
    assert apply_filter("format_date", DAY, locale=locale) == medium
    assert medium == format_date(date(2026, 3, 5), locale=locale)
    assert apply_filter("format_date('long')", DAY, locale=locale) == long
    # A date object (not only an ISO string) formats the same way.
    assert apply_filter("format_date", date(2026, 3, 5), locale=locale) == medium


@pytest.mark.parametrize(
    ("locale", "new_york", "utc"),
    [
        ("en", "Dec 31, 2025, 9:30:00 PM", "Jan 1, 2026, 2:30:00 AM"),
        ("fr", "31 déc. 2025, 21:30:00", "1 janv. 2026, 02:30:00"),
        ("de", "31.12.2025, 21:30:00", "01.01.2026, 02:30:00"),
    ],
)
def test_format_datetime_shows_the_moment_in_the_contact_time_zone(
    locale: str, new_york: str, utc: str
) -> None:
    shown = apply_filter("format_datetime", MOMENT, locale=locale, timezone="America/New_York")
    assert spaces(shown) == new_york
    assert shown == format_datetime(
        datetime(2026, 1, 1, 2, 30, tzinfo=UTC),
        tzinfo=ZoneInfo("America/New_York"),
        locale=locale,
    )
    assert spaces(apply_filter("format_datetime", MOMENT, locale=locale)) == utc


def test_format_time_uses_the_contact_time_zone() -> None:
    shown = apply_filter("format_time", MOMENT, locale="en", timezone="America/New_York")
    assert spaces(shown) == "9:30 PM"
    assert apply_filter("format_time", MOMENT, locale="de", timezone="Europe/Berlin") == "03:30"


def test_render_formats_with_the_render_locale_and_the_contact_time_zone() -> None:
    stored = stored_template(
        {
            "fields": {"trigger.properties.total": "required", "trigger.properties.at": "required"},
            "email": {
                "subject": "Ihre Bestellung",
                "text": "{{ trigger.properties.total|format_currency('EUR') }} am "
                "{{ trigger.properties.at|format_datetime('short') }}",
            },
        }
    )
    inputs = make_inputs(properties={"total": AMOUNT, "at": MOMENT}, timezone="America/New_York")

    rendered = render_source(stored, inputs, locale="de")

    assert spaces(rendered.parts["text"]) == "1.234,50 € am 31.12.25, 21:30"
    assert rendered.locale == "de"
    # A contact without a time zone sees UTC.
    utc = render_source(
        stored, make_inputs(properties={"total": AMOUNT, "at": MOMENT}), locale="de"
    )
    assert spaces(utc.parts["text"]) == "1.234,50 € am 01.01.26, 02:30"


# 3. Declared fields, defaults, fallbacks, what never goes out

CART_TEMPLATE = """
fields:
  contact.traits.first_name: {default: there}
  trigger.properties.cart_url: required
email:
  subject: "{{ contact.traits.first_name }}, your cart is waiting"
  text: "Hi {{ contact.traits.first_name }}, finish your order: {{ trigger.properties.cart_url }}"
  html: >-
    <p>Hi {{ contact.traits.first_name }},
    <a href="{{ trigger.properties.cart_url }}">finish your order</a></p>
"""
CART_FALLBACK = """
fallback:
  email:
    subject: Something for you
    text: "Hi {{ contact.traits.first_name }}, see what is new: https://shop.example/new"
"""
CART_URL = "https://shop.example/cart/7"


def test_an_optional_field_gets_its_default(tmp_path: Path) -> None:
    source = write_source(tmp_path, "promo", CART_TEMPLATE)

    rendered = render_source(source.stored, make_inputs(properties={"cart_url": CART_URL}))

    assert rendered.parts["subject"] == "there, your cart is waiting"
    assert rendered.parts["text"] == f"Hi there, finish your order: {CART_URL}"
    html = rendered.parts["html"]
    assert f'<body><p>Hi there, <a href="{CART_URL}">finish your order</a></p></body>' in html
    assert rendered.used_fallback is False
    assert rendered.fallback_reason == ""
    assert_deliverable(rendered)


def test_a_present_optional_field_wins_over_its_default_and_null_means_absent(
    tmp_path: Path,
) -> None:
    source = write_source(tmp_path, "promo", CART_TEMPLATE)

    ann = render_source(
        source.stored,
        make_inputs(traits={"first_name": "Ann"}, properties={"cart_url": CART_URL}),
    )
    nobody = render_source(
        source.stored,
        make_inputs(traits={"first_name": None}, properties={"cart_url": CART_URL}),
    )

    assert ann.parts["subject"] == "Ann, your cart is waiting"
    assert nobody.parts["subject"] == "there, your cart is waiting"


def test_only_declared_fields_reach_the_template() -> None:
    spec = TemplateSpec.model_validate(
        {
            "fields": {
                "contact.traits.first_name": "required",
                "trigger.properties.cart_url": "required",
            },
            "email": {"subject": "Hi", "text": "Hello"},
        }
    )
    inputs = make_inputs(
        traits={"first_name": "Ann", "ssn": "123-45-6789"},
        properties={"cart_url": CART_URL, "card_last4": "4242"},
        timezone="Europe/Paris",
    )

    data, missing = declared_data(spec, inputs)

    assert missing == []
    assert data == {
        "contact": {"traits": {"first_name": "Ann"}},
        "trigger": {"properties": {"cart_url": CART_URL}},
    }


def test_a_template_cannot_read_an_undeclared_trait_even_if_the_contact_has_it() -> None:
    # Load-time checks refuse such a template; a stored version is still narrowed at render.
    stored = stored_template(
        {
            "fields": {"contact.traits.first_name": "required"},
            "email": {"subject": "Hi", "text": "{{ contact.traits.ssn }}"},
        }
    )
    inputs = make_inputs(traits={"first_name": "Ann", "ssn": "123-45-6789"})

    with pytest.raises(RenderError) as caught:
        render_source(stored, inputs)

    message = str(caught.value)
    assert "email.text failed to render: UndefinedError" in message
    assert "ssn" in message
    assert "123-45-6789" not in message


def test_reading_an_undeclared_field_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        write_source(
            tmp_path,
            "promo",
            """
            email:
              subject: Hi
              text: "{{ contact.traits.ssn }}"
            """,
        )
    [problem] = caught.value.problems
    assert "email.text: uses contact.traits.ssn but does not declare it" in problem
    assert "add it under `fields:`" in problem


def test_a_missing_required_field_switches_to_the_fallback(tmp_path: Path) -> None:
    source = write_source(tmp_path, "promo", CART_TEMPLATE + CART_FALLBACK)

    rendered = render_source(source.stored, make_inputs(traits={"first_name": "Ann"}))

    assert rendered.used_fallback is True
    assert rendered.parts == {
        "subject": "Something for you",
        "text": "Hi Ann, see what is new: https://shop.example/new",
    }
    assert rendered.fallback_reason == (
        f"template 'promo' needs trigger.properties.cart_url, which is missing for contact "
        f"{CONTACT_KEY!r} (no such data, or the lookup failed)"
    )
    assert_deliverable(rendered)


def test_a_missing_required_field_without_a_fallback_names_the_field_and_the_fix(
    tmp_path: Path,
) -> None:
    source = write_source(tmp_path, "promo", CART_TEMPLATE)

    with pytest.raises(RenderError) as caught:
        render_source(source.stored, make_inputs())

    message = str(caught.value)
    assert "needs trigger.properties.cart_url, which is missing" in message
    assert CONTACT_KEY in message
    assert (
        "give the field a default or add a `fallback:` email variant to templates/promo.yaml"
        in message
    )


def test_a_fallback_without_this_channel_is_no_fallback(tmp_path: Path) -> None:
    source = write_source(
        tmp_path,
        "promo",
        CART_TEMPLATE
        + """
fallback:
  sms:
    text: See what is new at https://shop.example/new
""",
    )

    with pytest.raises(RenderError, match="add a `fallback:` email variant"):
        render_source(source.stored, make_inputs())


def test_a_translation_fallback_is_preferred_to_the_source_fallback(tmp_path: Path) -> None:
    source = write_source(tmp_path, "promo", CART_TEMPLATE + CART_FALLBACK)
    translated = TemplateSpec.model_validate(
        {
            "email": {"subject": "Votre panier", "text": "Bonjour"},
            "fallback": {"email": {"subject": "Pour vous", "text": "Nouveautés"}},
        }
    )

    rendered = render(
        source.stored,
        template="promo",
        channel="email",
        content=translated,
        fallback=translated.fallback,
        locale="fr",
        inputs=make_inputs(),
    )

    assert rendered.used_fallback is True
    assert rendered.parts == {"subject": "Pour vous", "text": "Nouveautés"}


def test_a_fallback_that_fails_too_says_so(tmp_path: Path) -> None:
    # Load-time checks allow this: the fallback reads a declared field, the one missing.
    source = write_source(
        tmp_path,
        "promo",
        CART_TEMPLATE
        + """
fallback:
  email:
    subject: Something for you
    text: "Your cart: {{ trigger.properties.cart_url }}"
""",
    )

    with pytest.raises(RenderError) as caught:
        render_source(source.stored, make_inputs())

    message = str(caught.value)
    assert message.startswith("template 'promo' needs trigger.properties.cart_url")
    assert "; the fallback failed too: email.text failed to render: UndefinedError" in message
    assert "a fallback must not read what may be missing" in message


def test_none_never_reaches_the_output() -> None:
    stored = stored_template(
        {
            "fields": {"contact.traits.nickname": {"default": None}},
            "email": {"subject": "Hi", "text": "Hi {{ contact.traits.nickname }}"},
        }
    )

    with pytest.raises(RenderError, match=r"email\.text failed to render: .*missing \(None\)"):
        render_source(stored, make_inputs())


def test_none_makes_the_render_use_the_fallback() -> None:
    stored = stored_template(
        {
            "fields": {"contact.traits.nickname": {"default": None}},
            "email": {"subject": "Hi {{ contact.traits.nickname }}", "text": "Hello"},
            "fallback": {"email": {"subject": "Hi", "text": "Hello"}},
        }
    )

    rendered = render_source(stored, make_inputs())

    assert rendered.used_fallback is True
    assert "a value is missing (None)" in rendered.fallback_reason
    assert_deliverable(rendered)


def test_a_blank_subject_is_refused() -> None:
    stored = stored_template(
        {
            "fields": {"contact.traits.first_name": {"default": ""}},
            "email": {"subject": "  {{ contact.traits.first_name }} \n", "text": "Hello"},
        }
    )

    with pytest.raises(RenderError, match=r"email\.subject came out blank"):
        render_source(stored, make_inputs())


def test_the_subject_is_one_line() -> None:
    stored = stored_template(
        {
            "fields": {"contact.traits.first_name": {"default": ""}},
            "email": {
                "subject": "Welcome\n{% if contact.traits.first_name %}\n  "
                "{{ contact.traits.first_name }}{% endif %}\n",
                "text": "Hello",
            },
        }
    )

    rendered = render_source(stored, make_inputs(traits={"first_name": "Ann"}))

    assert rendered.parts["subject"] == "Welcome Ann"


def test_template_syntax_left_in_the_output_is_refused() -> None:
    stored = stored_template(
        {"email": {"subject": "Hi", "text": "{% raw %}Hello {{ name }}{% endraw %}"}}
    )

    with pytest.raises(RenderError, match=r"email\.text came out with template syntax in it"):
        render_source(stored, make_inputs())


# 4. Lookups over real HTTP

CATALOG: dict[str, dict[str, JsonValue]] = {
    "kettle-1": {"name": "Copper Kettle", "price": 19.5},
    "mug-2": {"name": "Blue Mug", "price": 7},
}
SLOW_SECONDS = 3.0
"""How long the slow route waits; lookups in the tests time out well before."""


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out closed its socket: not an error worth printing."""


class _Handler(BaseHTTPRequestHandler):
    """/products/<sku> (JSON or 404), /echo/<segments>, /broken (500), /text, /slow."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        with server.lock:
            server.seen.append(self.path)
        route, _, rest = self.path.removeprefix("/").partition("/")
        if route == "products" and unquote(rest) in CATALOG:
            self._send(200, json.dumps(CATALOG[unquote(rest)]))
        elif route == "products":
            self._send(404, json.dumps({"error": "no such product"}))
        elif route == "echo":
            self._send(200, json.dumps({"segments": [unquote(s) for s in rest.split("/")]}))
        elif route == "broken":
            self._send(500, json.dumps({"error": "boom"}))
        elif route == "text":
            self._send(200, "<html>maintenance</html>", "text/html")
        elif route == "slow":
            server.release.wait(SLOW_SECONDS)
            self._send(200, json.dumps({"late": True}))
        else:
            self._send(404, "{}")

    def _send(self, status: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class LookupServer:
    base_url: str
    server: _Server

    @property
    def seen(self) -> list[str]:
        with self.server.lock:
            return list(self.server.seen)

    def hits(self, path: str) -> int:
        return self.seen.count(path)


@pytest.fixture
def lookup_server() -> Iterator[LookupServer]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LookupServer(f"http://127.0.0.1:{server.server_port}", server)
    finally:
        server.release.set()  # wake the slow route
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client() -> Iterator[LookupClient]:
    lookup_client = LookupClient()
    try:
        yield lookup_client
    finally:
        lookup_client.close()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SKU_DATA: dict[str, Any] = {"trigger": {"properties": {"sku": "kettle-1"}}}


def product_lookup(server: LookupServer, **options: Any) -> Lookup:
    return Lookup(url=server.base_url + "/products/{{ trigger.properties.sku }}", **options)


def test_a_lookup_returns_the_json_body(lookup_server: LookupServer, client: LookupClient) -> None:
    results, failures = client.fetch({"product": product_lookup(lookup_server)}, SKU_DATA)

    assert failures == []
    assert results == {"product": {"name": "Copper Kettle", "price": 19.5}}
    assert lookup_server.seen == ["/products/kettle-1"]


def test_a_cached_lookup_does_not_hit_the_service_again(
    lookup_server: LookupServer,
) -> None:
    clock = ManualClock()
    client = LookupClient(clock=clock)
    lookups = {"product": product_lookup(lookup_server, cache=timedelta(minutes=5))}
    try:
        first, _ = client.fetch(lookups, SKU_DATA)
        clock.now += 299
        second, _ = client.fetch(lookups, SKU_DATA)
        assert lookup_server.hits("/products/kettle-1") == 1
        assert first == second == {"product": CATALOG["kettle-1"]}

        # Another URL is another cache entry.
        client.fetch(lookups, {"trigger": {"properties": {"sku": "mug-2"}}})
        assert lookup_server.hits("/products/mug-2") == 1

        # Once the cache lifetime has passed, the service is asked again.
        clock.now += 2
        third, _ = client.fetch(lookups, SKU_DATA)
        assert lookup_server.hits("/products/kettle-1") == 2
        assert third == first
    finally:
        client.close()


def test_without_cache_every_fetch_hits_the_service(
    lookup_server: LookupServer, client: LookupClient
) -> None:
    lookups = {"product": product_lookup(lookup_server)}
    client.fetch(lookups, SKU_DATA)
    client.fetch(lookups, SKU_DATA)

    assert lookup_server.hits("/products/kettle-1") == 2


def test_a_failed_lookup_is_not_cached(lookup_server: LookupServer, client: LookupClient) -> None:
    lookups = {"status": Lookup(url=lookup_server.base_url + "/broken", cache=timedelta(hours=1))}
    client.fetch(lookups, {})
    results, failures = client.fetch(lookups, {})

    assert results == {}
    assert len(failures) == 1
    assert lookup_server.hits("/broken") == 2


def test_a_lookup_that_times_out_fails_without_waiting_for_the_service(
    lookup_server: LookupServer, client: LookupClient
) -> None:
    lookups = {"slow": Lookup(url=lookup_server.base_url + "/slow", timeout=timedelta(seconds=0.2))}

    started = time.monotonic()
    results, failures = client.fetch(lookups, {})
    elapsed = time.monotonic() - started

    assert results == {}
    assert failures == ["lookup 'slow': 127.0.0.1 did not answer within 0.2s"]
    assert elapsed < SLOW_SECONDS / 2
    assert lookup_server.hits("/slow") == 1


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/broken", "lookup 'info': 127.0.0.1 answered HTTP 500"),
        ("/products/no-such-sku", "lookup 'info': 127.0.0.1 answered HTTP 404"),
        ("/text", "lookup 'info': 127.0.0.1 answered something that is not JSON"),
    ],
)
def test_an_error_status_or_a_body_that_is_not_json_is_a_failure(
    lookup_server: LookupServer, client: LookupClient, path: str, failure: str
) -> None:
    results, failures = client.fetch({"info": Lookup(url=lookup_server.base_url + path)}, {})

    assert results == {}
    assert failures == [failure]
    assert lookup_server.hits(path) == 1


def test_one_failed_lookup_leaves_the_others(
    lookup_server: LookupServer, client: LookupClient
) -> None:
    lookups = {
        "product": product_lookup(lookup_server),
        "status": Lookup(url=lookup_server.base_url + "/broken"),
    }

    results, failures = client.fetch(lookups, SKU_DATA)

    assert results == {"product": CATALOG["kettle-1"]}
    assert failures == ["lookup 'status': 127.0.0.1 answered HTTP 500"]


def test_a_failure_names_the_service_not_the_url_with_contact_data(
    lookup_server: LookupServer, client: LookupClient
) -> None:
    lookup = Lookup(url=lookup_server.base_url + "/broken/{{ contact.traits.email }}")

    _, failures = client.fetch({"crm": lookup}, {"contact": {"traits": {"email": "ann@x.io"}}})

    assert failures == ["lookup 'crm': 127.0.0.1 answered HTTP 500"]
    assert lookup_server.seen == ["/broken/ann%40x.io"]


def test_a_url_that_cannot_be_built_is_a_failure_without_a_request(
    lookup_server: LookupServer, client: LookupClient
) -> None:
    results, failures = client.fetch({"product": product_lookup(lookup_server)}, {})

    assert results == {}
    [failure] = failures
    assert failure.startswith("lookup 'product': cannot build its URL:")
    assert lookup_server.seen == []


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("../admin?x=1", "..%2Fadmin%3Fx%3D1"),
        ("@evil.example", "%40evil.example"),
        ("a b/c#d&e=f", "a%20b%2Fc%23d%26e%3Df"),
        ("%2e%2e", "%252e%252e"),
        ("{{ 7*7 }}", "%7B%7B%207%2A7%20%7D%7D"),
    ],
)
def test_values_in_a_lookup_url_arrive_as_one_encoded_path_segment(
    lookup_server: LookupServer, client: LookupClient, value: str, sent: str
) -> None:
    lookup = Lookup(url=lookup_server.base_url + "/echo/{{ trigger.properties.sku }}/detail")

    results, failures = client.fetch({"echo": lookup}, {"trigger": {"properties": {"sku": value}}})

    assert failures == []
    assert lookup_server.seen == [f"/echo/{sent}/detail"]
    assert results == {"echo": {"segments": [value, "detail"]}}


@pytest.mark.parametrize(
    "url",
    [
        "https://{{ trigger.properties.host }}/items",
        "https://api.{{ trigger.properties.region }}.example/items",
        "ftp://catalog.example/items",
        "catalog.example/items",
        "https:///items",
    ],
)
def test_a_lookup_host_is_fixed_and_http(url: str) -> None:
    with pytest.raises(ValidationError, match="only its path and query may use fields"):
        Lookup(url=url)


LOOKUP_TEMPLATE = """
fields:
  contact.traits.first_name: {default: there}
  trigger.properties.sku: required
lookups:
  product:
    url: "BASE/PATH/{{ trigger.properties.sku }}"
    timeout: 0.3
email:
  subject: "{{ lookup.product.name }} is back in stock"
  text: >-
    Hi {{ contact.traits.first_name }}, {{ lookup.product.name }} costs
    {{ lookup.product.price|format_currency('EUR') }}.
fallback:
  email:
    subject: New arrivals are in
    text: "Hi {{ contact.traits.first_name }}, see what is new: https://shop.example/new"
"""


def compose(source: TemplateSource, inputs: Inputs, client: LookupClient) -> Rendered:
    """What a send does: look up with the declared data, then render with the results."""
    data, _ = declared_data(source.spec, inputs)
    results, _ = client.fetch(source.spec.lookups, data)
    return render_source(source.stored, inputs.model_copy(update={"lookups": results}))


def lookup_template(tmp_path: Path, server: LookupServer, path: str) -> TemplateSource:
    text = LOOKUP_TEMPLATE.replace("BASE", server.base_url).replace("PATH", path)
    return write_source(tmp_path, "promo", text)


def test_a_template_renders_what_its_lookup_returned(
    tmp_path: Path, lookup_server: LookupServer, client: LookupClient
) -> None:
    source = lookup_template(tmp_path, lookup_server, "products")

    rendered = compose(source, make_inputs(properties={"sku": "kettle-1"}), client)

    assert rendered.used_fallback is False
    assert rendered.parts == {
        "subject": "Copper Kettle is back in stock",
        "text": "Hi there, Copper Kettle costs €19.50.",
    }


@pytest.mark.parametrize(
    ("path", "sku"),
    [("broken", "kettle-1"), ("text", "kettle-1"), ("slow", "kettle-1"), ("products", "gone-9")],
)
def test_a_failed_lookup_makes_the_render_use_the_fallback(
    tmp_path: Path, lookup_server: LookupServer, client: LookupClient, path: str, sku: str
) -> None:
    source = lookup_template(tmp_path, lookup_server, path)

    rendered = compose(
        source, make_inputs(traits={"first_name": "Ann"}, properties={"sku": sku}), client
    )

    assert lookup_server.hits(f"/{path}/{sku}") == 1
    assert rendered.used_fallback is True
    assert rendered.parts == {
        "subject": "New arrivals are in",
        "text": "Hi Ann, see what is new: https://shop.example/new",
    }
    assert rendered.fallback_reason == (
        f"template 'promo' needs lookup.product, which is missing for contact {CONTACT_KEY!r} "
        "(no such data, or the lookup failed)"
    )


# 5. Template injection

UNSAFE_AT_RENDER = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ range.__globals__ }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ brand.__class__ }}",
    "{{ brand|attr('__class__') }}",
    "{{ '{0.__class__}'.format(brand) }}",
]
"""They read no field, only jinja globals and literals, so loading cannot tell them apart;
the sandbox refuses the attribute access when they render."""


@pytest.mark.parametrize("payload", UNSAFE_AT_RENDER)
def test_sandbox_escapes_load_but_are_refused_when_rendered(tmp_path: Path, payload: str) -> None:
    source = write_source(
        tmp_path,
        "promo",
        f"""
        email:
          subject: Hi
          text: {json.dumps("Hello " + payload)}
        """,
    )

    with pytest.raises(RenderError) as caught:
        render_source(source.stored, make_inputs())

    message = str(caught.value)
    assert message.startswith("email.text failed to render: SecurityError: access to attribute")
    assert "is unsafe" in message
    assert "<class" not in message
    assert "__builtins__" not in message


@pytest.mark.parametrize("payload", UNSAFE_AT_RENDER[:3])
def test_a_sandbox_escape_with_a_fallback_sends_the_fallback(payload: str) -> None:
    stored = stored_template(
        {
            "email": {"subject": "Hi", "text": payload},
            "fallback": {"email": {"subject": "Hi", "text": "Hello"}},
        }
    )

    rendered = render_source(stored, make_inputs())

    assert rendered.used_fallback is True
    assert rendered.parts["text"] == "Hello"
    assert rendered.fallback_reason.startswith("email.text failed to render: SecurityError")


@pytest.mark.parametrize(
    ("payload", "name"),
    [("{{ config }}", "config"), ("{{ lipsum.__globals__ }}", "lipsum"), ("{{ os }}", "os")],
)
def test_names_templates_do_not_have_are_refused_at_load(
    tmp_path: Path, payload: str, name: str
) -> None:
    with pytest.raises(SpecError) as caught:
        write_source(
            tmp_path,
            "promo",
            f"""
            email:
              subject: Hi
              text: {json.dumps(payload)}
            """,
        )

    [problem] = caught.value.problems
    assert f"email.text: reads {name!r}, which templates do not have" in problem


def test_lipsum_and_random_are_not_in_the_environment() -> None:
    env = make_environment({}, html=False)
    assert "lipsum" not in env.globals
    assert "random" not in env.filters


NAME_FIELDS: dict[str, Any] = {"contact.traits.first_name": "required"}
NAME_EMAIL = {
    "subject": "Hi {{ contact.traits.first_name }}",
    "text": "Dear {{ contact.traits.first_name }}",
    "html": "<p>Dear {{ contact.traits.first_name }}</p>",
}


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", "Ann & <Bob>"])
def test_data_with_markup_is_escaped_in_html_and_plain_in_text(value: str) -> None:
    stored = stored_template({"fields": NAME_FIELDS, "email": NAME_EMAIL})

    rendered = render_source(stored, make_inputs(traits={"first_name": value}))

    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert rendered.parts["subject"] == f"Hi {value}"
    assert rendered.parts["text"] == f"Dear {value}"
    assert f"<p>Dear {escaped}</p>" in rendered.parts["html"]
    assert "<script>" not in rendered.parts["html"]


@pytest.mark.parametrize("value", ["a{# hidden #}b", "${7*7} #{7*7}", "{7*7}", "% 49 %"])
def test_data_that_looks_like_a_template_is_not_evaluated(value: str) -> None:
    stored = stored_template(
        {
            "fields": {"trigger.properties.note": "required"},
            "email": {"subject": "Note", "text": "<{{ trigger.properties.note }}>"},
            "fallback": {"email": {"subject": "Note", "text": "(no note)"}},
        }
    )

    rendered = render_source(stored, make_inputs(properties={"note": value}))

    # Were the value rendered as a template, the comment would vanish: it comes out verbatim.
    assert rendered.used_fallback is False
    assert rendered.parts["text"] == f"<{value}>"


@pytest.mark.parametrize("value", ["{{ 7*7 }}", "{% raw %}", "{% endraw %}"])
def test_data_that_looks_like_template_syntax_is_never_evaluated_and_not_sent(
    value: str,
) -> None:
    # Jinja renders every tag it parsed, so template syntax in the output can only come
    # from data: it is treated as an injection attempt. Nothing is evaluated (no "49"),
    # the fallback goes out, and without one the error says where it came from.
    plain = stored_template({"fields": NAME_FIELDS, "email": NAME_EMAIL})
    with_fallback = stored_template(
        {
            "fields": NAME_FIELDS,
            "email": NAME_EMAIL,
            "fallback": {"email": {"subject": "Hi there", "text": "Hello", "html": "<p>Hi</p>"}},
        }
    )
    inputs = make_inputs(traits={"first_name": value})

    rendered = render_source(with_fallback, inputs)

    assert rendered.used_fallback is True
    assert rendered.fallback_reason == (
        "email.subject came out with template syntax in it (a value in the data contains "
        "'{{' or '{%')"
    )
    assert rendered.parts == {
        "subject": "Hi there",
        "text": "Hello",
        "html": "<html><head></head><body><p>Hi</p></body></html>",
    }
    with pytest.raises(RenderError) as caught:
        render_source(plain, inputs)
    assert str(caught.value).startswith("email.subject came out with template syntax in it")
    assert "add a `fallback:` email variant" in str(caught.value)
    assert "give the field a default" not in str(caught.value)  # no field is missing
    assert "49" not in str(caught.value)


def test_closing_braces_in_data_and_json_chat_blocks_go_out_as_written() -> None:
    stored = stored_template(
        {
            "fields": NAME_FIELDS,
            "email": NAME_EMAIL,
            "chat": {
                "text": "Hi {{ contact.traits.first_name }}",
                "blocks": '{"blocks": [{"type": "section", "text": {"type": "mrkdwn", '
                '"text": "Hi {{ contact.traits.first_name }}"}}]}',
            },
        }
    )
    inputs = make_inputs(traits={"first_name": "Tom }} Jerry"})

    email = render_source(stored, inputs)
    chat = render_source(stored, inputs, channel="chat")

    assert email.used_fallback is False and "Tom }} Jerry" in email.parts["text"]
    assert chat.parts["blocks"].endswith('"Hi Tom }} Jerry"}}]}')


def test_a_lookup_result_is_data_too() -> None:
    stored = stored_template(
        {
            "lookups": {"product": {"url": "https://catalog.example/p/1"}},
            "email": {
                "subject": "{{ lookup.product.name }}",
                "text": "{{ lookup.product.name }}",
                "html": "<b>{{ lookup.product.name }}</b>",
            },
        }
    )

    rendered = render_source(
        stored, make_inputs(lookups={"product": {"name": "<i>Kettle</i> {# x #}"}})
    )

    assert rendered.parts["text"] == "<i>Kettle</i> {# x #}"
    assert "<b>&lt;i&gt;Kettle&lt;/i&gt; {# x #}</b>" in rendered.parts["html"]


# 6. Email parts


def test_css_in_a_style_block_is_inlined() -> None:
    stored = stored_template(
        {
            "email": {
                "subject": "Hi",
                "text": "Hello",
                "html": "<html><head><style>p { color: #123456 } .big { font-size: 20px }"
                '</style></head><body><p class="big">Hello</p></body></html>',
            }
        }
    )

    html = render_source(stored, make_inputs()).parts["html"]

    assert '<p class="big" style="color: #123456;font-size: 20px;">Hello</p>' in html
    assert "<style>" not in html


def test_the_preheader_is_the_hidden_first_text_of_the_body() -> None:
    stored = stored_template(
        {
            "fields": {"trigger.properties.plan": {"default": "free"}},
            "email": {
                "subject": "Welcome",
                "preheader": "Your {{ trigger.properties.plan }} plan is ready",
                "text": "Hello",
                "html": '<html><body class="main"><p>Hello</p></body></html>',
            },
        }
    )

    rendered = render_source(stored, make_inputs())

    html = rendered.parts["html"]
    assert rendered.parts["preheader"] == "Your free plan is ready"
    body = html.index('<body class="main">') + len('<body class="main">')
    assert html[body:].startswith(
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
        "Your free plan is ready</div><p>Hello</p>"
    )


def test_a_fragment_gets_a_document_and_the_preheader_first() -> None:
    stored = stored_template(
        {
            "email": {
                "subject": "Welcome",
                "preheader": "Read me first",
                "text": "Hello",
                "html": "<p>Hello</p>",
            },
        }
    )

    html = render_source(stored, make_inputs()).parts["html"]

    assert html.index("Read me first") < html.index("<p>Hello</p>")
    assert html.count("display:none") == 1


def test_no_preheader_no_hidden_text() -> None:
    stored = stored_template(
        {"email": {"subject": "Welcome", "text": "Hello", "html": "<p>Hello</p>"}}
    )

    html = render_source(stored, make_inputs()).parts["html"]

    assert "display:none" not in html


def test_partials_render_with_the_brand(tmp_path: Path) -> None:
    partials = {"footer.txt": "--\n{{ brand.company }}, {{ brand.postal_address }}\n"}
    source = write_source(
        tmp_path,
        "promo",
        """
        email:
          subject: Hi
          text: |
            Hello
            {% include "footer.txt" %}
        """,
        partials,
    )

    rendered = render_source(source.stored, make_inputs())

    assert source.stored.partials == partials
    assert rendered.parts["text"] == "Hello\n--\nAcme, 1 Main St, Springfield\n\n"


# 7. SMS sizes


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("Ça va à Malmö? 5 £ ¿Si?", "GSM-7", 23, 1),
        ("¿Sí?", "UCS-2", 4, 1),
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 80 + "a", "GSM-7", 161, 2),
        ("[]{}" * 40, "GSM-7", 320, 3),
        ("ł" * 70, "UCS-2", 70, 1),
        ("ł" * 71, "UCS-2", 71, 2),
        ("a" * 69 + "ł", "UCS-2", 70, 1),
        ("a" * 70 + "ł", "UCS-2", 71, 2),
        ("ł" * 134, "UCS-2", 134, 2),
        ("ł" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),
        ("a" * 159 + "😀", "UCS-2", 161, 3),
    ],
)
def test_sms_size(text: str, encoding: str, units: int, segments: int) -> None:
    size = sms_size(text)

    assert (size.encoding, size.units, size.segments) == (encoding, units, segments)


def test_an_emoji_or_polish_letter_halves_what_fits_in_one_sms() -> None:
    plain = "Your order has shipped. " * 6  # 144 characters
    assert sms_size(plain).segments == 1
    assert sms_size(plain + "😀").encoding == "UCS-2"
    assert sms_size(plain + "😀").segments == 3
    assert sms_size(plain + "ł").segments == 3


def test_a_french_amount_makes_an_sms_ucs2(tmp_path: Path) -> None:
    # babel's narrow no-break space is not a GSM-7 character: a French-formatted amount
    # alone switches the SMS to UCS-2 (70 characters a segment instead of 160).
    library = load_library(shutil.copytree(EXAMPLE_TEMPLATES, tmp_path / "templates"))
    source = library.templates["cart-reminder"]
    inputs = make_inputs(
        properties={"total": AMOUNT, "currency": "EUR", "cart_url": CART_URL},
        brand=library.brand.model_dump(),
    )

    english = render_source(source.stored, inputs, channel="sms", template="cart-reminder")
    french = render_source(
        source.stored, inputs, channel="sms", locale="fr", template="cart-reminder"
    )

    assert english.parts["text"] == (
        f"Acme: your cart (€1,234.50) is waiting: {CART_URL} Reply STOP to opt out."
    )
    assert sms_size(english.parts["text"]).encoding == "GSM-7"
    assert "(1\u202f234,50\xa0€)" in french.parts["text"]
    assert sms_size(french.parts["text"]).encoding == "UCS-2"


# 8. Translations


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    return shutil.copytree(EXAMPLE_TEMPLATES, tmp_path / "templates")


def test_the_library_loads_the_french_translation(library_dir: Path) -> None:
    library = load_library(library_dir)

    welcome = library.templates["welcome"]
    assert set(welcome.translations) == {"fr"}
    assert welcome.translations["fr"].translates == 1
    assert welcome.translation_paths["fr"] == library_dir / "welcome.fr.yaml"
    assert welcome.spec.source_locale == "en"
    # A fr-CA contact's chain reaches the French file before the English source.
    chain = locale_chain("fr-CA", welcome.spec.source_locale)
    assert next(tag for tag in chain if tag in welcome.translations) == "fr"


def test_french_content_renders_the_french_subject(library_dir: Path) -> None:
    library = load_library(library_dir)
    welcome = library.templates["welcome"]
    translation = welcome.translations["fr"]
    inputs = make_inputs(traits={"first_name": "Marie"}, brand=library.brand.model_dump())

    rendered = render(
        welcome.stored,
        template="welcome",
        channel="email",
        content=translation,
        fallback=translation.fallback,
        locale="fr",
        inputs=inputs,
    )

    assert rendered.locale == "fr"
    assert rendered.used_fallback is False
    assert rendered.parts["subject"] == "Bienvenue chez Acme, Marie !"
    assert rendered.parts["preheader"] == ("Votre formule free est prête. Voici par où commencer.")
    assert rendered.parts["text"].startswith("Bonjour Marie,\n\nBienvenue chez Acme.")
    assert "Acme Inc., 548 Market St, San Francisco" in rendered.parts["text"]
    assert "Créez votre premier projet" in rendered.parts["html"]
    assert_deliverable(rendered)


def test_the_english_source_renders_the_english_subject(library_dir: Path) -> None:
    library = load_library(library_dir)
    welcome = library.templates["welcome"]

    rendered = render_source(
        welcome.stored,
        make_inputs(
            traits={"first_name": "Ann"},
            properties={"plan": "pro"},
            brand=library.brand.model_dump(),
        ),
        template="welcome",
    )

    assert rendered.parts["subject"] == "Welcome to Acme, Ann!"
    assert rendered.parts["preheader"] == "Your pro plan is ready. Here is where to start."


def test_a_translation_with_an_unknown_locale_is_refused(library_dir: Path) -> None:
    shutil.copy(library_dir / "welcome.fr.yaml", library_dir / "welcome.xx.yaml")

    with pytest.raises(SpecError) as caught:
        load_library(library_dir)

    [problem] = caught.value.problems
    assert problem.startswith(f"{library_dir / 'welcome.xx.yaml'}: the file name's locale:")
    assert "'xx' is not a locale babel knows" in problem


def test_a_translation_of_no_template_is_refused(library_dir: Path) -> None:
    shutil.copy(library_dir / "welcome.fr.yaml", library_dir / "farewell.fr.yaml")

    with pytest.raises(SpecError) as caught:
        load_library(library_dir)

    [problem] = caught.value.problems
    assert "translates a template that does not exist: add templates/farewell.yaml" in problem


# Fixes found by these tests


@pytest.mark.parametrize("value", [".", ".."])
def test_a_dot_segment_in_data_cannot_walk_up_the_lookup_path(
    lookup_server: LookupServer, client: LookupClient, value: str
) -> None:
    lookup = Lookup(url=lookup_server.base_url + "/echo/{{ trigger.properties.sku }}/detail")

    results, [failure] = client.fetch({"echo": lookup}, {"trigger": {"properties": {"sku": value}}})

    assert results == {}
    assert f"{value!r} cannot be a URL path segment" in failure
    assert lookup_server.seen == []  # nothing was requested


def test_a_lookup_timeout_bounds_the_whole_response_not_each_read(
    client: LookupClient,
) -> None:
    """A service that trickles its body a byte at a time is cut off at the timeout."""

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            body = b'{"name": "' + b"x" * 40 + b'"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        lookup = Lookup(
            url=f"http://127.0.0.1:{server.server_port}/p", timeout=timedelta(milliseconds=300)
        )
        results, [failure] = client.fetch({"p": lookup}, {})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert results == {}
    assert failure == "lookup 'p': 127.0.0.1 did not answer within 0.3s"


def test_the_preheader_is_escaped_in_the_html_part() -> None:
    stored = stored_template(
        {
            "fields": NAME_FIELDS,
            "email": {
                "subject": "Hi",
                "preheader": "For {{ contact.traits.first_name }}",
                "text": "Hello",
                "html": "<p>Hello</p>",
            },
        }
    )

    rendered = render_source(stored, make_inputs(traits={"first_name": "<img src=x onerror=1>"}))

    assert "<img" not in rendered.parts["html"]
    assert "For &lt;img src=x onerror=1&gt;" in rendered.parts["html"]


def test_format_date_shows_the_date_in_the_contact_time_zone() -> None:
    late_evening_in_new_york = "2026-01-01T02:00:00+00:00"

    assert (
        apply_filter(
            "format_date", late_evening_in_new_york, locale="en", timezone="America/New_York"
        )
        == "Dec 31, 2025"
    )
    assert apply_filter("format_date", late_evening_in_new_york, locale="en") == "Jan 1, 2026"
