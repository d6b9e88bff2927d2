"""Conditions are evaluated safely: no eval, no escape from the sandbox."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tidings.models.expressions import (
    STEP_ROOTS,
    ExpressionError,
    FieldRef,
    check_expression,
    evaluate,
    fields_read,
)

CONTACT = {"key": "c1", "timezone": "UTC", "locale": "en", "traits": {"tier": "gold", "age": 40}}


def test_conditions_read_contact_traits_and_event_properties() -> None:
    context = {"contact": CONTACT, "properties": {"total": 25}, "received": {"login": 2}}
    assert evaluate("contact.traits.tier == 'gold' and properties.total > 20", context)
    assert evaluate("received.login >= 2 and received.logout == 0", context)
    assert not evaluate("contact.traits.age < 18", context)


def test_missing_data_makes_a_condition_false_not_an_error() -> None:
    context: dict[str, Any] = {"contact": {"traits": {}}, "properties": {}}
    assert not evaluate("contact.traits.tier == 'gold'", context)
    assert not evaluate("properties.total > 20", context)
    assert evaluate("not contact.traits.vip", context)


def test_a_type_clash_is_an_error_that_names_the_condition() -> None:
    expected = re.escape("'properties.total > 20' could not be evaluated")
    with pytest.raises(ExpressionError, match=expected):
        evaluate("properties.total > 20", {"properties": {"total": "lots"}})


@pytest.mark.parametrize(
    "payload",
    [
        "().__class__.__bases__[0].__subclasses__()",
        "contact.__class__",
        "properties.total.__add__(1)",
    ],
)
def test_attribute_escapes_are_refused_before_anything_runs(payload: str) -> None:
    with pytest.raises(ExpressionError, match="attributes starting with _ are not allowed"):
        check_expression(payload, roots=STEP_ROOTS, trigger_event="x", trigger_properties={})


@pytest.mark.parametrize(
    "payload",
    [
        "properties['__class__']",
        "lipsum.__globals__",
        "cycler.__init__.__globals__.os.popen('id').read()",
    ],
)
def test_the_sandbox_refuses_escapes_at_evaluation_too(payload: str) -> None:
    try:
        result = evaluate(payload, {"properties": {"total": 1}})
    except ExpressionError:
        return
    assert not result  # an undefined, not an object from outside the sandbox


def test_fields_read_reports_outermost_chains() -> None:
    refs = fields_read("contact.traits.tier == 'gold' or trigger.properties['cart-id'] | length")
    assert refs == (
        FieldRef("contact", ("traits", "tier")),
        FieldRef("trigger", ("properties", "cart-id")),
    )


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("([1, 2, 3] | random) > 1", "No filter named 'random'"),
        ("lipsum(1) != ''", "lipsum"),
    ],
)
def test_conditions_cannot_draw_random_numbers(condition: str, expected: str) -> None:
    """Workflow code must decide the same way when it is replayed."""
    with pytest.raises(ExpressionError, match=expected):
        check_expression(condition, roots=STEP_ROOTS, trigger_event="x", trigger_properties={})


@pytest.mark.parametrize("condition", ["'vip' in contact.traits", "contact.key == contact"])
def test_a_condition_must_name_the_contact_fields_it_reads(condition: str) -> None:
    with pytest.raises(ExpressionError, match="as a whole; name the fields it needs"):
        check_expression(condition, roots=STEP_ROOTS, trigger_event="x", trigger_properties={})
