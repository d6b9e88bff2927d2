"""A digest step: a contact's events of one kind, collected over a window, sent as one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from support import EXAMPLE_TEMPLATES, Stack, copy_tree, eventually, running_stack
from temporalio.testing import WorkflowEnvironment

from tidings import naming
from tidings.models.workflow_io import JourneyStatus
from tidings.starter.smtp_sink import SmtpSink

JOURNEY = """\
name: comments
version: 1
trigger: {event: subscribed}
steps:
  - id: collect
    digest:
      event: comment_added
      window: 1d
      max: 3
      send: {template: comment-digest, purpose: service, topic: comments}
"""

TEMPLATE = """\
description: The comments of the day, in one email.
purpose: service
fields:
  event.properties.events: required
  event.properties.count: required
email:
  subject: "{{ event.properties.count }} new comments"
  text: |
    {% for item in event.properties.events %}- {{ item.author }}: {{ item.text }}
    {% endfor %}
    {% include "legal.txt" %}
"""


@pytest.fixture
async def stack(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "comments.yaml").write_text(JOURNEY)
    templates = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    (templates / "comment-digest.yaml").write_text(TEMPLATE)
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        journeys_dir=journeys,
        templates_dir=templates,
    ) as s:
        yield s


async def start_collecting(stack: Stack, key: str) -> None:
    await stack.client.identify(key, jurisdiction="US", emails=[f"{key}@example.com"])
    await stack.client.track(key, "subscribed")
    handle = stack.handle("comments", key)

    async def collecting() -> bool:
        status = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
        return bool(status.waiting_for == "digest:comment_added")

    await eventually(collecting)


async def comment(stack: Stack, key: str, n: int) -> None:
    await stack.client.track(key, "comment_added", {"author": f"user{n}", "text": f"note {n}"})


async def test_events_over_the_window_go_out_as_one_message(stack: Stack, contact_key: str) -> None:
    await start_collecting(stack, contact_key)
    await comment(stack, contact_key, 1)
    await comment(stack, contact_key, 2)
    result = await stack.result("comments", contact_key)

    assert result.sends == 1
    [sent] = stack.sent()
    assert sent.subject == "2 new comments"
    assert sent.message.text.startswith("- user1: note 1\n- user2: note 2\n")
    run = stack.journey_runs(contact_key)[0]
    assert sent.scheduled_at - run.entered_at >= timedelta(days=1)  # the whole window


async def test_the_digest_goes_out_early_when_max_events_came(
    stack: Stack, contact_key: str
) -> None:
    await start_collecting(stack, contact_key)
    for n in range(1, 5):
        await comment(stack, contact_key, n)

    await stack.result("comments", contact_key)

    [sent] = stack.sent()
    assert sent.subject == "3 new comments"
    assert "user4" not in sent.message.text
    run = stack.journey_runs(contact_key)[0]
    assert sent.scheduled_at - run.entered_at < timedelta(hours=1)


async def test_no_events_no_message(stack: Stack, contact_key: str) -> None:
    await start_collecting(stack, contact_key)

    result = await stack.result("comments", contact_key)

    assert (result.outcome, result.sends) == ("completed", 0)
    assert stack.sent() == [] and stack.deliveries() == []
