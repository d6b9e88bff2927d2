"""Compliance lint: every rule in compliance.yaml, over source (submit) and rendered (send) text.

Each rule is shown to fire where it should and to stay quiet where it should
not; every finding names its rule, its locale, where it is and the line
within the part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tidings.content.files import load_library
from tidings.content.lint import (
    ComplianceConfig,
    Finding,
    Scope,
    lint,
    load_compliance,
    rendered_parts,
    review_findings,
    source_parts,
)
from tidings.content.spec import StoredTemplate, TemplateSpec, TranslationSpec, Variants
from tidings.errors import SpecError
from tidings.settings import PACKAGE_DIR

COMPLIANCE = load_compliance(PACKAGE_DIR / "compliance.yaml")

COMPANY = "Acme"
ADDRESS = "Acme Inc., 548 Market St, San Francisco, CA 94104, USA"
UNSUBSCRIBE = "https://acme.example/u/t0k3n"
VALUES = {"unsubscribe_url": UNSUBSCRIBE, "brand.postal_address": ADDRESS, "brand.company": COMPANY}
FOOTER = f"--\n{COMPANY}, {ADDRESS}\nUnsubscribe: {UNSUBSCRIBE}"
"""Everything a marketing email must show, as rendered."""

SOURCE_FOOTER = "{{ brand.company }}, {{ brand.postal_address }}\n{{ unsubscribe_url }}"
"""The same, as a template reads it."""


def config(*industries: str, markets: Sequence[str] | None = None) -> ComplianceConfig:
    """compliance.yaml as shipped, for a company in `industries` (and `markets`)."""
    update: dict[str, Any] = {"industries": list(industries)}
    if markets is not None:
        update["markets"] = list(markets)
    return COMPLIANCE.model_copy(update=update)


def rendered(
    channel: str,
    parts: Mapping[str, str],
    *,
    compliance: ComplianceConfig = COMPLIANCE,
    locale: str = "en",
    purpose: str = "marketing",
    jurisdiction: str = "US",
    values: dict[str, str] | None = None,
) -> list[Finding]:
    """Send-time lint of one rendered message to one recipient."""
    scope = Scope(locale=locale, purposes=[purpose], jurisdictions=[jurisdiction])
    return lint(
        compliance,
        rendered_parts(channel, parts),
        scope,
        values=VALUES if values is None else values,
    )


def email(body: str, *, footer: str = FOOTER, subject: str = "News from Acme") -> dict[str, str]:
    """A rendered email whose text and HTML parts both carry `body` then `footer`."""
    return {
        "subject": subject,
        "text": f"{body}\n{footer}",
        "html": f"<p>{body}</p>\n<p>{footer}</p>",
    }


def rules(findings: Sequence[Finding]) -> list[str]:
    return sorted(f.rule for f in findings)


def only(findings: Sequence[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def spec(data: dict[str, Any]) -> TemplateSpec:
    return TemplateSpec.model_validate(data)


def reviewed(
    data: dict[str, Any],
    partials: dict[str, str] | None = None,
    *,
    compliance: ComplianceConfig = COMPLIANCE,
    locale: str = "en",
) -> list[Finding]:
    """Submit-time lint of a template source, for every market."""
    source = spec(data)
    stored = StoredTemplate(spec=source, partials=partials or {})
    return review_findings(compliance, stored, source, locale)


def assert_names(finding: Finding, *, rule: str, locale: str, where: str, line: int | None) -> None:
    """The finding, and the line a person reads, name the rule, the locale, the place, the line."""
    assert (finding.rule, finding.locale, finding.where, finding.line) == (
        rule,
        locale,
        where,
        line,
    )
    text = str(finding)
    assert text.startswith(f"error: {rule} [{locale}] {where}")
    if line is None:
        assert text.startswith(f"error: {rule} [{locale}] {where}: ")
    else:
        assert f"{where} line {line}" in text
    assert finding.message in text


# The shipped rules file


def test_the_shipped_rules_load_and_every_example_template_passes_them() -> None:
    ids = [rule.id for rule in COMPLIANCE.rules]
    assert len(ids) == len(set(ids)) == 13
    assert COMPLIANCE.markets == ["US", "CA", "GB", "DE", "FR"]
    assert COMPLIANCE.industries == []
    library = load_library(PACKAGE_DIR / "templates")
    assert len(library.templates) == 12
    for source in library.templates.values():
        assert review_findings(COMPLIANCE, source.stored, source.spec, "en") == []
        for locale, translation in source.translations.items():
            assert review_findings(COMPLIANCE, source.stored, translation, locale) == []


# Prohibited phrases, per industry


def test_guaranteed_returns_fire_for_a_finance_company_on_their_line() -> None:
    parts = email("Dear investor,\nour fund offers Guaranteed Returns of 8%.")
    [text, html] = only(
        rendered("email", parts, compliance=config("finance")), "finance.guaranteed-returns"
    )
    assert_names(text, rule="finance.guaranteed-returns", locale="en", where="email.text", line=2)
    assert_names(html, rule="finance.guaranteed-returns", locale="en", where="email.html", line=2)
    assert text.excerpt == "Guaranteed Returns"
    assert "('Guaranteed Returns')" in str(text)


def test_finance_rules_are_skipped_for_a_company_not_in_finance() -> None:
    parts = email("Guaranteed returns, risk-free!")
    assert rendered("email", parts, compliance=config()) == []
    assert rendered("email", parts, compliance=config("health")) == []


def test_a_guarantee_of_something_else_is_not_a_guaranteed_return() -> None:
    parts = email("Guaranteed delivery by Friday.")
    assert rendered("email", parts, compliance=config("finance")) == []


@pytest.mark.parametrize("phrase", ["risk-free", "Risk Free", "RISK-FREE"])
def test_risk_free_fires_for_finance_in_any_case(phrase: str) -> None:
    parts = {"text": f"Reply STOP to opt out.\nAcme: a {phrase} portfolio"}
    [finding] = rendered("sms", parts, compliance=config("finance"))
    assert_names(finding, rule="finance.risk-free", locale="en", where="sms.text", line=2)
    assert finding.excerpt == phrase


@pytest.mark.parametrize("locale", ["fr", "fr-CA", "FR-ca"])
def test_the_french_finance_rule_fires_for_french_locales(locale: str) -> None:
    parts = email("Bonjour,\n\nDes rendements garantis, sans risque !")
    findings = only(
        rendered("email", parts, compliance=config("finance"), locale=locale),
        "finance.guaranteed-returns-fr",
    )
    assert [(f.where, f.line, f.excerpt) for f in findings] == [
        ("email.text", 3, "rendements garantis"),
        ("email.text", 3, "sans risque"),
        ("email.html", 3, "rendements garantis"),
        ("email.html", 3, "sans risque"),
    ]
    assert f"[{locale}] email.text line 3" in str(findings[0])


@pytest.mark.parametrize("locale", ["en", "de", "fra", "en-FR"])
def test_the_french_finance_rule_is_skipped_for_other_locales(locale: str) -> None:
    parts = email("Des rendements garantis, sans risque !")
    assert rendered("email", parts, compliance=config("finance"), locale=locale) == []


def test_health_cure_claims_fire_for_a_health_company() -> None:
    parts = email("Our tea cures colds.\nA miracle for your joints.")
    findings = only(rendered("email", parts, compliance=config("health")), "health.cure-claims")
    assert [(f.where, f.line, f.excerpt) for f in findings] == [
        ("email.text", 1, "cures"),
        ("email.text", 2, "miracle"),
        ("email.html", 1, "cures"),
        ("email.html", 2, "miracle"),
    ]
    assert_names(findings[1], rule="health.cure-claims", locale="en", where="email.text", line=2)


def test_health_rules_do_not_fire_on_words_that_contain_cure_or_for_other_industries() -> None:
    harmless = email("Secure checkout. Your order is procured and insured.")
    assert rendered("email", harmless, compliance=config("health")) == []
    claim = email("Our tea cures colds.")
    assert rendered("email", claim, compliance=config("finance")) == []


def test_a_prohibited_phrase_is_found_in_every_part_including_the_subject() -> None:
    parts = email("Hello", subject="Risk-free returns inside")
    findings = rendered("email", parts, compliance=config("finance"))
    assert [(f.rule, f.where, f.line) for f in findings] == [
        ("finance.risk-free", "email.subject", 1)
    ]


# Required disclosures, per purpose, channel and jurisdiction (rendered)


def test_a_marketing_email_without_its_unsubscribe_link_in_html_is_flagged_there_only() -> None:
    parts = email("Big news")
    parts["html"] = parts["html"].replace(UNSUBSCRIBE, "#")
    [finding] = rendered("email", parts)
    assert_names(finding, rule="email.unsubscribe-link", locale="en", where="email.html", line=None)


def test_the_unsubscribe_link_is_not_required_of_service_email_or_of_sms() -> None:
    parts = email("Your invoice", footer=f"{COMPANY}, {ADDRESS}")
    assert rendered("email", parts, purpose="service") == []
    assert rendered("email", parts, purpose="transactional") == []
    assert rules(rendered("email", parts)) == ["email.unsubscribe-link"] * 2
    sms = {"text": f"{COMPANY}: sale today. Reply STOP to opt out."}
    assert rendered("sms", sms) == []


def test_a_disclosure_must_be_the_actual_value_not_just_any_url() -> None:
    parts = email("Big news", footer=f"{COMPANY}, {ADDRESS}\nhttps://acme.example/u/other")
    assert rules(rendered("email", parts)) == ["email.unsubscribe-link"] * 2


def test_a_disclosure_in_the_subject_or_preheader_does_not_count() -> None:
    parts = email("Big news", footer=f"{COMPANY}, {ADDRESS}", subject=f"Unsubscribe: {UNSUBSCRIBE}")
    parts["preheader"] = UNSUBSCRIBE
    assert [(f.rule, f.where) for f in rendered("email", parts)] == [
        ("email.unsubscribe-link", "email.text"),
        ("email.unsubscribe-link", "email.html"),
    ]


@pytest.mark.parametrize("jurisdiction", ["US", "US-CA", "us"])
def test_can_spam_wants_the_postal_address_in_us_marketing_email(jurisdiction: str) -> None:
    parts = email("Big news", footer=f"{COMPANY}\n{UNSUBSCRIBE}")
    findings = rendered("email", parts, jurisdiction=jurisdiction)
    assert rules(findings) == ["can-spam.postal-address"] * 2
    assert_names(
        findings[0], rule="can-spam.postal-address", locale="en", where="email.text", line=None
    )


@pytest.mark.parametrize("jurisdiction", ["GB", "DE", "USA"])
def test_can_spam_does_not_apply_outside_the_us(jurisdiction: str) -> None:
    parts = email("Big news", footer=f"{COMPANY}\n{UNSUBSCRIBE}")
    assert rendered("email", parts, jurisdiction=jurisdiction) == []


def test_an_html_escaped_postal_address_counts_as_shown() -> None:
    address = "Smith & Co, 1 Main St, Springfield, IL 62701"
    values = {**VALUES, "brand.postal_address": address}
    parts = {
        "subject": "News",
        "text": f"Big news\n{address}\n{UNSUBSCRIBE}",
        "html": f"<p>Big news</p><p>Smith &amp; Co, 1 Main St, Springfield, IL 62701</p>"
        f'<a href="{UNSUBSCRIBE}">Unsubscribe</a>',
    }
    assert rendered("email", parts, values=values) == []
    broken = {**parts, "html": parts["html"].replace("Smith &amp; Co", "Smith &amp;amp; Co")}
    [finding] = rendered("email", broken, values=values)
    assert (finding.rule, finding.where) == ("can-spam.postal-address", "email.html")


def test_an_empty_brand_address_is_never_shown() -> None:
    parts = email("Big news")
    values = {**VALUES, "brand.postal_address": ""}
    assert rules(rendered("email", parts, values=values)) == ["can-spam.postal-address"] * 2


def test_casl_wants_the_sender_and_its_address_in_canadian_marketing_email() -> None:
    parts = email("Big news", footer=UNSUBSCRIBE)
    canada = rendered("email", parts, jurisdiction="CA", locale="fr-CA")
    assert [(f.rule, f.where) for f in canada] == [
        ("casl.sender-identification", "email.text"),
        ("casl.sender-identification", "email.html"),
        ("casl.contact-information", "email.text"),
        ("casl.contact-information", "email.html"),
    ]
    assert_names(
        canada[0], rule="casl.sender-identification", locale="fr-CA", where="email.text", line=None
    )
    # In the US the address is missing too (CAN-SPAM), the company is not required.
    assert rules(rendered("email", parts, jurisdiction="US")) == ["can-spam.postal-address"] * 2
    assert rendered("email", parts, jurisdiction="GB") == []


def test_casl_wants_the_sender_in_canadian_marketing_sms_but_not_the_address() -> None:
    sms = {"text": "Sale today. Reply STOP to opt out."}
    assert rules(rendered("sms", sms, jurisdiction="CA")) == [
        "casl.sender-identification",
        "sms.sender-identification",
    ]
    assert rendered("sms", {"text": f"{COMPANY}: {sms['text']}"}, jurisdiction="CA") == []


def test_marketing_sms_must_say_who_it_is_from() -> None:
    [finding] = rendered("sms", {"text": "Sale today. Reply STOP to opt out."}, jurisdiction="GB")
    assert_names(
        finding, rule="sms.sender-identification", locale="en", where="sms.text", line=None
    )


@pytest.mark.parametrize("opt_out", ["Reply STOP to opt out.", "Text stop to end."])
def test_marketing_sms_with_opt_out_instructions_passes(opt_out: str) -> None:
    assert rendered("sms", {"text": f"{COMPANY}: sale today. {opt_out}"}) == []


@pytest.mark.parametrize("text", [f"{COMPANY}: sale today.", f"{COMPANY}: unstoppable deals."])
def test_marketing_sms_without_opt_out_instructions_is_flagged(text: str) -> None:
    [finding] = rendered("sms", {"text": text})
    assert_names(finding, rule="sms.opt-out-instructions", locale="en", where="sms.text", line=None)
    assert rendered("sms", {"text": text}, purpose="transactional") == []


# Sensitive data


def test_a_luhn_valid_card_number_is_flagged_and_redacted_an_order_number_is_not() -> None:
    text = (
        "Thanks for your order.\n"
        "Order number: 1234567812345678\n"
        "Charged to card 4111 1111 1111 1111 today.\n"
        "Never: 0000 0000 0000 0000"
    )
    [finding] = rendered("email", {"subject": "Receipt", "text": text}, purpose="transactional")
    assert_names(finding, rule="sensitive.card-number", locale="en", where="email.text", line=3)
    assert finding.excerpt == "…1111"
    assert "4111 1111" not in str(finding)
    assert "('…1111')" in str(finding)


@pytest.mark.parametrize("card", ["4242424242424242", "4242-4242-4242-4242", "378282246310005"])
def test_card_numbers_are_found_with_or_without_separators(card: str) -> None:
    findings = rendered("push", {"title": "Hi", "body": f"card {card}"}, purpose="critical")
    assert [(f.rule, f.where, f.line, f.excerpt) for f in findings] == [
        ("sensitive.card-number", "push.body", 1, f"…{card[-4:]}")
    ]


@pytest.mark.parametrize(
    ("text", "secret", "excerpt"),
    [
        ("SSN 123-45-6789 on file", "123-45-6789", "…6789"),
        ("NI: AB 12 34 56 C", "AB 12 34 56 C", "…456C"),
        ("NI: AB123456C", "AB123456C", "…456C"),
    ],
)
def test_national_id_numbers_are_flagged_and_redacted(text: str, secret: str, excerpt: str) -> None:
    findings = rendered("email", {"subject": "Hi", "text": f"Hello\n\n{text}"}, purpose="service")
    [finding] = findings
    assert_names(finding, rule="sensitive.national-id", locale="en", where="email.text", line=3)
    assert finding.excerpt == excerpt
    assert secret not in str(finding)


@pytest.mark.parametrize(
    "text", ["call 555-123-4567", "SSN 000-12-3456", "NI QQ 12 34 56 C", "NI GB 12 34 56 A"]
)
def test_things_that_only_look_like_national_ids_are_not_flagged(text: str) -> None:
    assert rendered("email", {"subject": "Hi", "text": text}, purpose="service") == []


def test_an_icd10_diagnosis_code_with_its_dot_is_flagged() -> None:
    text = "Your results are in.\nDiagnosis: E11.9, see your doctor."
    [finding] = rendered("email", {"subject": "Results", "text": text}, purpose="service")
    assert_names(finding, rule="sensitive.diagnosis-code", locale="en", where="email.text", line=2)
    assert finding.excerpt == "…"
    assert "E11.9" not in str(finding)


def test_a_code_without_the_dot_is_not_a_diagnosis_code() -> None:
    text = "Product E119 in stock, version 2.1, room B12."
    assert rendered("email", {"subject": "Stock", "text": text}, purpose="service") == []


# Source lint (submit): `shows` means the part reads the value


MARKETING = {
    "purpose": "marketing",
    "email": {
        "subject": "News",
        "text": "Hi,\n\nBig news.\n" + SOURCE_FOOTER,
        "html": "<p>Big news.</p>\n" + SOURCE_FOOTER,
    },
}


def test_a_marketing_source_that_reads_every_disclosure_passes() -> None:
    assert reviewed(MARKETING) == []


def test_a_source_that_reads_the_disclosures_through_a_partial_passes() -> None:
    partials = {"footer.txt": SOURCE_FOOTER, "footer.html": f"<p>{SOURCE_FOOTER}</p>"}
    data = {
        "purpose": "marketing",
        "email": {
            "subject": "News",
            "text": 'Big news.\n{% include "footer.txt" %}',
            "html": '<p>Big news.</p>{% include "footer.html" %}',
        },
    }
    assert reviewed(data, partials) == []
    parts = source_parts(spec(data), partials)
    assert [p.label for p in parts] == [
        "email.subject",
        "email.text",
        "email.html",
        "_partials/footer.html",
        "_partials/footer.txt",
    ]
    assert parts[1].shows == {"brand.company", "brand.postal_address", "unsubscribe_url"}
    assert parts[1].included == SOURCE_FOOTER


def test_a_partial_that_includes_a_partial_counts_too() -> None:
    partials = {"outer.txt": 'Bye\n{% include "inner.txt" %}', "inner.txt": SOURCE_FOOTER}
    data = {
        "purpose": "marketing",
        "email": {"subject": "News", "text": 'Big news.\n{% include "outer.txt" %}'},
    }
    assert reviewed(data, partials) == []


def test_a_source_that_does_not_read_the_unsubscribe_url_is_flagged_for_every_market() -> None:
    text = "Hi,\n\nBig news.\n{{ brand.company }}, {{ brand.postal_address }}\nunsubscribe_url"
    data = {"purpose": "marketing", "email": {"subject": "News", "text": text}}
    [finding] = reviewed(data)
    assert_names(finding, rule="email.unsubscribe-link", locale="en", where="email.text", line=None)


def test_a_source_reviewed_for_its_markets_gets_us_and_canadian_rules() -> None:
    data = {"purpose": "marketing", "email": {"subject": "News", "text": "{{ unsubscribe_url }}"}}
    assert rules(reviewed(data)) == [
        "can-spam.postal-address",
        "casl.contact-information",
        "casl.sender-identification",
    ]
    assert rules(reviewed(data, compliance=config(markets=["US"]))) == ["can-spam.postal-address"]
    assert reviewed(data, compliance=config(markets=["GB", "DE"])) == []


def test_a_source_without_a_purpose_is_checked_as_marketing() -> None:
    data = {"email": {"subject": "News", "text": "Big news"}}
    assert "email.unsubscribe-link" in rules(reviewed(data))
    assert reviewed({**data, "purpose": "service"}) == []


def test_a_marketing_sms_source_needs_the_company_and_stop_which_a_partial_may_carry() -> None:
    bare = {"purpose": "marketing", "sms": {"text": "Sale today: {{ event.properties.url }}"}}
    assert rules(reviewed(bare, compliance=config(markets=["GB"]))) == [
        "sms.opt-out-instructions",
        "sms.sender-identification",
    ]
    partials = {"optout.txt": "{{ brand.company }}. Reply STOP to opt out."}
    included = {
        **bare,
        "sms": {"text": 'Sale today: {{ event.properties.url }} {% include "optout.txt" %}'},
    }
    assert reviewed(included, partials, compliance=config(markets=["GB"])) == []


def test_a_prohibited_phrase_in_the_source_names_its_line_within_the_part() -> None:
    text = "Hi,\n\nA {{ brand.company }} fund, risk-free.\n" + SOURCE_FOOTER
    data = {**MARKETING, "email": {"subject": "News", "text": text}}
    [finding] = reviewed(data, compliance=config("finance"))
    assert_names(finding, rule="finance.risk-free", locale="en", where="email.text", line=3)


def test_a_prohibited_phrase_in_a_partial_is_found_in_the_partial_on_its_line() -> None:
    partials = {"footer.txt": SOURCE_FOOTER + "\nOur funds: risk free."}
    data = {
        "purpose": "marketing",
        "email": {"subject": "News", "text": 'Big news.\n{% include "footer.txt" %}'},
    }
    [finding] = reviewed(data, partials, compliance=config("finance"))
    assert_names(
        finding, rule="finance.risk-free", locale="en", where="_partials/footer.txt", line=3
    )


def test_the_fallback_is_linted_too_and_named_as_such() -> None:
    data = {
        **MARKETING,
        "fallback": {"email": {"subject": "News", "text": "Generic news.\n{{ brand.company }}"}},
    }
    findings = reviewed(data, compliance=config(markets=["US"]))
    assert [(f.rule, f.where) for f in findings] == [
        ("email.unsubscribe-link", "fallback.email.text"),
        ("can-spam.postal-address", "fallback.email.text"),
    ]


def test_a_translation_is_reviewed_in_its_own_locale() -> None:
    source = spec({**MARKETING, "source_locale": "en"})
    stored = StoredTemplate(spec=source, partials={})
    french = TranslationSpec.model_validate(
        {
            "translates": 1,
            "email": {
                "subject": "Nouvelles",
                "text": "Bonjour,\nUn placement sans risque.\n" + SOURCE_FOOTER,
            },
        }
    )
    findings = review_findings(config("finance"), stored, french, "fr-CA")
    [finding] = findings
    assert_names(
        finding, rule="finance.guaranteed-returns-fr", locale="fr-CA", where="email.text", line=2
    )
    assert review_findings(config("finance"), stored, source, "en") == []


def test_a_card_number_in_the_source_is_flagged_on_its_line() -> None:
    text = "Hi,\nTest card: 4111111111111111\n" + SOURCE_FOOTER
    data = {**MARKETING, "email": {"subject": "News", "text": text}}
    [finding] = reviewed(data)
    assert_names(finding, rule="sensitive.card-number", locale="en", where="email.text", line=2)
    assert finding.excerpt == "…1111"


# A bad rules file is refused


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compliance.yaml"
    path.write_text(text)
    return path


def test_a_rule_with_a_bad_regex_is_refused_naming_the_file_line_and_field(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "industries: []\n"
        "rules:\n"
        "  - id: fine\n"
        "    prohibit: 'fine'\n"
        "    message: ok\n"
        "  - id: broken\n"
        "    prohibit: '(unclosed'\n"
        "    message: oops\n",
    )
    with pytest.raises(SpecError) as caught:
        load_compliance(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:7: rules[1].prohibit: not a valid regular expression: ")
    assert "missing )" in problem


def test_a_bad_required_pattern_is_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - id: r\n    require: {pattern: '[a-'}\n    message: m\n")
    with pytest.raises(SpecError, match=r"rules\[0\]\.require\.pattern: not a valid regular"):
        load_compliance(path)


def test_a_rule_with_two_checks_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:\n  - id: double\n    prohibit: 'x'\n    sensitive: card_number\n    message: m\n",
    )
    with pytest.raises(SpecError) as caught:
        load_compliance(path)
    assert caught.value.problems == [
        f"{path}:2: rules[0]: rule 'double': give exactly one of prohibit, require, sensitive"
    ]


def test_a_rule_with_no_check_or_a_requirement_with_two_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:\n"
        "  - id: empty\n"
        "    message: m\n"
        "  - id: both\n"
        "    require: {pattern: 'x', shows: brand.company}\n"
        "    message: m\n",
    )
    with pytest.raises(SpecError) as caught:
        load_compliance(path)
    assert caught.value.problems == [
        f"{path}:2: rules[0]: rule 'empty': give exactly one of prohibit, require, sensitive",
        f"{path}:5: rules[1].require: give exactly one of `pattern` or `shows`",
    ]


def test_an_unknown_key_or_value_to_show_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules:\n"
        "  - id: r\n"
        "    require: {shows: brand.phone}\n"
        "    message: m\n"
        "    severty: warning\n",
    )
    with pytest.raises(SpecError) as caught:
        load_compliance(path)
    problems = "\n".join(caught.value.problems)
    assert f"{path}:3: rules[0].require.shows:" in problems
    assert f"{path}:5: rules[0].severty: Extra inputs are not permitted" in problems


def test_a_layout_block_the_template_overrides_does_not_count_as_shown() -> None:
    """A template that empties the layout's footer block loses the address it held."""
    partials = {
        "layout.html": "<body>{% block body %}{% endblock %}"
        "{% block footer %}{{ brand.company }}, {{ brand.postal_address }}{% endblock %}</body>",
    }
    overriding = (
        '{% extends "layout.html" %}{% block body %}<a href="{{ unsubscribe_url }}">u</a>'
        "{% endblock %}{% block footer %}{% endblock %}"
    )
    keeping = overriding.removesuffix("{% block footer %}{% endblock %}")
    config = ComplianceConfig.model_validate(
        {
            "markets": ["US"],
            "rules": [
                {
                    "id": "can-spam.postal-address",
                    "purposes": ["marketing"],
                    "channels": ["email"],
                    "require": {"shows": "brand.postal_address"},
                    "message": "show the address",
                }
            ],
        }
    )
    scope = Scope(locale="en", purposes=["marketing"], jurisdictions=["US"])

    def findings(html: str) -> list[str]:
        variants = Variants.model_validate({"email": {"subject": "s", "text": "t", "html": html}})
        parts = [p for p in source_parts(variants, partials) if p.part == "html"]
        return [f.rule for f in lint(config, parts, scope)]

    assert findings(overriding) == ["can-spam.postal-address"]
    assert findings(keeping) == []
