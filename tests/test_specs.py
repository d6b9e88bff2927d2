"""Bad journey and template files are refused with one precise message per problem."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from support import EXAMPLE_JOURNEYS, EXAMPLE_TEMPLATES

from tidings.catalog import Catalog, load_journey
from tidings.content.files import load_library
from tidings.errors import SpecError

VALID = """\
name: test-journey
version: 1
trigger:
  event: cart_updated
  properties: {total: number}
steps:
  - id: first
    wait: 1h
  - id: nudge
    send: {template: check-in, purpose: service, topic: onboarding}
"""


def problems_in(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "journey.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as caught:
        load_journey(path, load_library(EXAMPLE_TEMPLATES).templates)
    return caught.value.problems


def replace_steps(steps: str) -> str:
    head = VALID.split("steps:")[0]
    return head + "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")


def test_the_example_journeys_and_templates_are_valid() -> None:
    catalog = Catalog.load(EXAMPLE_JOURNEYS, EXAMPLE_TEMPLATES)
    assert set(catalog.journeys) == {
        "onboarding",
        "cart-abandonment",
        "renewal",
        "win-back",
        "retention-offer",
        "payment-failed",
    }


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    journey = load_journey(path, load_library(EXAMPLE_TEMPLATES).templates)
    assert [s.id for s in journey.steps] == ["first", "nudge"]


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    [problem] = problems_in(tmp_path, "name: x\nsteps:\n  - id: a\n    wait: [1h\n")
    assert problem.startswith(f"{tmp_path / 'journey.yaml'}:")
    assert "invalid YAML" in problem


def test_an_unknown_goto_target_names_the_step_and_the_known_ones(tmp_path: Path) -> None:
    [problem] = problems_in(
        tmp_path,
        replace_steps("""\
            - id: first
              wait: 1h
            - id: jump
              goto: nudj
            - id: nudge
              send: {template: check-in, purpose: service, topic: onboarding}
            """),
    )
    assert ":9: step 'jump': target 'nudj' is not a step of this journey" in problem
    assert "steps: first, jump, nudge" in problem


def test_an_unknown_template_lists_the_known_ones(tmp_path: Path) -> None:
    [problem] = problems_in(tmp_path, VALID.replace("check-in", "check-inn"))
    assert "step 'nudge': unknown template 'check-inn'" in problem
    assert "check-in," in problem and "templates/<name>.yaml" in problem


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("contact.tier == 'gold'", "contact.traits.tier"),
        ("event.total > 3", "event.properties.total"),
        ("customer.age > 3", "use one of: contact, trigger, event, properties, received"),
        ("trigger.properties.totl > 3", "does not declare (declared: total)"),
        ("contact.traits.vip and", "cannot parse"),
    ],
)
def test_a_condition_over_a_field_that_cannot_exist_is_refused(
    tmp_path: Path, condition: str, expected: str
) -> None:
    [problem] = problems_in(
        tmp_path,
        replace_steps(f"""\
            - id: first
              branch:
                - when: "{condition}"
                  goto: nudge
                - else: end
            - id: nudge
              send: {{template: check-in, purpose: service, topic: onboarding}}
            """),
    )
    assert "step 'first': when:" in problem
    assert expected in problem


def test_a_trigger_condition_may_only_read_declared_properties(tmp_path: Path) -> None:
    [problem] = problems_in(
        tmp_path,
        VALID.replace(
            "properties: {total: number}",
            "where: 'properties.count > 1'\n  properties: {total: number}",
        ),
    )
    assert problem.endswith("add it under trigger.properties")
    assert "trigger.where" in problem


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("{id: a, wait: 1h, goto: b}", "a step needs exactly one of: wait, wait_until"),
        ("{id: a}", "a step needs exactly one of"),
        ("{id: a, wait: 1x}", "'1x' is not a duration; write it like 90s"),
        ("{id: a, wait: 0s}", "must be a positive duration"),
        ("{id: Bad_Id, wait: 1h}", "'Bad_Id' is not a valid step id"),
        ("{id: a, wait_until: {offset: -3d}}", "wait_until needs `at`"),
        ("{id: a, wait_until: {at: '25:00'}}", "'25:00' is not a time of day"),
        (
            "{id: a, send: {template: check-in, purpose: spam, topic: x}}",
            "'transactional', 'service'",
        ),
        ("{id: a, wait: 1h, colour: red}", "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_step_names_the_step_and_the_fix(
    tmp_path: Path, step: str, expected: str
) -> None:
    problems = problems_in(tmp_path, replace_steps(f"- {step}\n"))
    assert any(":7: step 'a'" in p or ":7: step 'Bad_Id'" in p for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_unreachable_steps_and_loops_without_waiting_are_refused(tmp_path: Path) -> None:
    problems = problems_in(
        tmp_path,
        replace_steps("""\
            - id: first
              send: {template: check-in, purpose: service, topic: onboarding}
            - id: again
              goto: first
            - id: orphan
              wait: 1h
            """),
    )
    assert any("step 'orphan': no step leads here" in p for p in problems)
    assert any("first -> again -> first loop without waiting" in p for p in problems)


def test_duplicate_step_ids_and_waiting_for_an_exit_event(tmp_path: Path) -> None:
    text = replace_steps("""\
        - id: first
          wait_for: {event: cart_emptied, timeout: 1d, on_timeout: end}
        - id: first
          wait: 1h
        """).replace("steps:", "exit_on: [cart_emptied]\nsteps:")
    problems = problems_in(tmp_path, text)
    assert any("step 'first': the id is used twice" in p for p in problems)


def test_waiting_for_an_event_that_ends_the_journey_is_refused(tmp_path: Path) -> None:
    text = replace_steps("""\
        - id: first
          wait_for: {event: cart_emptied, timeout: 1d, on_timeout: end}
        """).replace("steps:", "exit_on: [cart_emptied]\nsteps:")
    [problem] = problems_in(tmp_path, text)
    assert "step 'first': waits for 'cart_emptied', but that event ends the journey" in problem


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_in(
        tmp_path,
        """\
        name: Bad Name
        version: 0
        trigger: {event: x}
        steps: []
        """,
    )
    assert len(problems) == 3
    assert any("'Bad Name' is not a valid journey name" in p for p in problems)


def test_a_catalog_with_a_bad_file_refuses_to_load_and_names_it(tmp_path: Path) -> None:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "good.yaml").write_text(VALID)
    (journeys / "bad.yaml").write_text(VALID.replace("test-journey", "other").replace("1h", "soon"))
    with pytest.raises(SpecError) as caught:
        Catalog.load(journeys, EXAMPLE_TEMPLATES)
    [problem] = caught.value.problems
    assert problem.startswith(f"{journeys / 'bad.yaml'}:8: step 'first'")


TRANSACTIONAL = VALID.replace(
    "send: {template: check-in, purpose: service, topic: onboarding}",
    "send: {template: check-in, purpose: transactional, topic: billing}",
)


def test_a_transactional_send_without_a_legal_rationale_is_refused(tmp_path: Path) -> None:
    [problem] = problems_in(tmp_path, TRANSACTIONAL)
    assert (
        "step 'nudge': a transactional send is exempt from marketing opt-outs only with" in problem
    )
    assert "add `rationale:` to the step, the journey or templates/check-in.yaml" in problem


@pytest.mark.parametrize(
    "where",
    [
        "step",
        "journey",
        "template",
    ],
)
def test_a_rationale_on_the_step_journey_or_template_is_enough(tmp_path: Path, where: str) -> None:
    text = TRANSACTIONAL
    templates_dir = EXAMPLE_TEMPLATES
    if where == "step":
        text = text.replace("topic: billing}", "topic: billing, rationale: 'invoice notice'}")
    elif where == "journey":
        text = text.replace("steps:", "rationale: Billing notices owed under the contract.\nsteps:")
    else:
        templates_dir = tmp_path / "templates"
        templates_dir.mkdir()
        shutil.copytree(EXAMPLE_TEMPLATES / "_partials", templates_dir / "_partials")
        source = (EXAMPLE_TEMPLATES / "check-in.yaml").read_text()
        (templates_dir / "check-in.yaml").write_text(source + "rationale: Account notice.\n")
    path = tmp_path / "journey.yaml"
    path.write_text(text)
    journey = load_journey(path, load_library(templates_dir).templates)
    assert journey.steps[1].send.purpose == "transactional"  # type: ignore[union-attr]
