"""Content review: a submitted template version goes legal -> compliance -> PR (and a
regional council for a translation); approval approves it, anything else sends it back
to draft with the comments. Reviewers decide through the same approval gates."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from support import EXAMPLE_TEMPLATES, Stack, eventually, running_stack
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from tidings.db import templates
from tidings.directory import Directory, load_directory
from tidings.models.approvals import GateRow
from tidings.starter.approval_admin import DecisionRefusedError
from tidings.starter.cli import app as cli
from tidings.starter.content_review import start_review
from tidings.starter.smtp_sink import SmtpSink
from tidings.starter.template_admin import TemplateAdmin

DIRECTORY = """\
users:
  ann: {name: Ann, roles: [legal], email: ann@acme.example}
  lena: {name: Lena, roles: [legal], email: lena@acme.example}
  carlos: {name: Carlos, roles: [compliance], email: carlos@acme.example}
  priya: {name: Priya, roles: [pr], email: priya@acme.example}
  fabienne: {name: Fabienne, roles: [council-fr], email: fabienne@acme.example}
content_review:
  stages: [legal, compliance, pr]
  deadline: 2d
  remind_every: 1d
  councils: {fr: council-fr}
"""


@dataclass
class Review:
    stack: Stack
    directory: Directory
    templates_dir: Path

    def admin(self) -> TemplateAdmin:
        return TemplateAdmin(self.stack.database, self.stack.settings)

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.templates_dir / name
        path.write_text(path.read_text().replace(old, new))

    async def submit(self, template: str, locale: str | None = None) -> GateRow:
        """As `tidings templates submit` does with content_review configured."""
        self.admin().push(actor="ann")
        self.admin().submit(template, number=None, locale=locale, actor="ann")
        assert self.directory.content_review is not None
        return await start_review(
            client=self.stack.temporal,
            database=self.stack.database,
            directory=self.directory,
            review=self.directory.content_review,
            template=template,
            number=None,
            locale=locale,
        )

    def status(self, template: str, number: int, locale: str | None = None) -> templates.Record:
        """The version, or the newest revision of its translation into `locale`."""
        with self.stack.database.session() as session:
            if locale is None:
                found = templates.version(session=session, template=template, number=number)
                assert found is not None
                return found
            revisions = [
                t
                for t in templates.translations(session=session, template=template)
                if t.locale == locale and t.source_version == number
            ]
            return max(revisions, key=lambda t: t.revision)


@pytest.fixture
async def review(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Review]:
    templates_dir = tmp_path / "templates"
    shutil.copytree(EXAMPLE_TEMPLATES, templates_dir)
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(DIRECTORY)
    async with running_stack(
        time_skipping,
        data_dir=tmp_path / "data",
        smtp=smtp,
        templates_dir=templates_dir,
        extra_settings={"directory_file": directory_file},
    ) as stack:
        yield Review(stack, load_directory(directory_file), templates_dir)


async def settled(review: Review, gate_id: str) -> None:
    """The review's workflow has finished (and settled the version)."""
    gate = await review.stack.client.approvals.show(gate_id)
    await review.stack.temporal.get_workflow_handle(gate.workflow_id).result()


async def test_a_version_passes_each_stage_in_turn_and_is_approved(review: Review) -> None:
    review.edit("welcome.yaml", "Start by creating", "Begin by creating")
    gate = await review.submit("welcome")
    approvals = review.stack.client.approvals

    assert (gate.scope, gate.roles, gate.pending_roles) == (
        "content",
        ["legal", "compliance", "pr"],
        ["legal"],
    )
    assert "Begin by creating" in str(gate.preview["diff"])
    env = {
        "TIDINGS_DATABASE_URL": review.stack.settings.database_url,
        "TIDINGS_DIRECTORY_FILE": str(review.stack.settings.directory_file),
        "TIDINGS_DATA_DIR": str(review.stack.settings.data_dir),
    }
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["approvals", "list"], env=env)
    assert "review of template welcome v2  waiting on: legal" in listed.output, listed.output
    shown = await asyncio.to_thread(
        CliRunner().invoke, cli, ["approvals", "show", gate.id], env=env
    )
    assert "--- changes" in shown.output
    assert "+      Begin by creating your first project" in shown.output
    with pytest.raises(DecisionRefusedError, match="holds none of the roles"):
        await approvals.decide(gate.id, user="ann", verdict="approve")  # the author: four eyes
    with pytest.raises(DecisionRefusedError, match="not compliance's turn"):
        await approvals.decide(gate.id, user="carlos", verdict="approve")
    with pytest.raises(templates.TemplateError, match="in the review workflow"):
        review.admin().approve("welcome", number=None, locale=None, actor="lena", comment=None)

    await approvals.decide(gate.id, user="lena", verdict="approve")
    await approvals.decide(gate.id, user="carlos", verdict="approve")

    async def told_priya() -> bool:  # PR's turn came: PR hears of it
        return len(review.stack.outbox("priya@acme.example")) == 1

    await eventually(told_priya)
    await approvals.decide(gate.id, user="priya", verdict="approve", comment="on brand")
    await settled(review, gate.id)

    version = review.status("welcome", 2)
    assert (version.status, version.decided_by) == ("approved", "lena, carlos, priya")
    history = [(e.version, e.action, e.actor) for e in review.admin().history("welcome")]
    assert history[-2:] == [(2, "submitted", "ann"), (2, "approved", "lena, carlos, priya")]
    # The first stage was told at once, and once; the author never.
    assert len(review.stack.outbox("lena@acme.example")) == 1
    assert review.stack.outbox("ann@acme.example") == []


async def test_a_request_for_changes_sends_the_version_back_to_draft_with_the_comment(
    review: Review,
) -> None:
    review.edit("welcome.yaml", "Start by creating", "Begin by creating")
    gate = await review.submit("welcome")
    approvals = review.stack.client.approvals
    await approvals.decide(gate.id, user="lena", verdict="approve")
    await approvals.decide(
        gate.id, user="carlos", verdict="request_changes", comment="add the opt-out line"
    )
    await settled(review, gate.id)

    version = review.status("welcome", 2)
    assert version.status == "draft"
    assert version.comment == "compliance (carlos): add the opt-out line"
    # Back to draft: the author edits it in place and submits again.
    review.edit("welcome.yaml", "Begin by creating", "Begin now by creating")
    again = await review.submit("welcome")
    assert again.id != gate.id and again.pending_roles == ["legal"]
    assert review.status("welcome", 2).status == "in_review"


async def test_a_translation_also_goes_to_its_regional_council(review: Review) -> None:
    review.edit("welcome.fr.yaml", "Bienvenue", "Bienvenue chez nous")
    gate = await review.submit("welcome", locale="fr")
    approvals = review.stack.client.approvals

    assert gate.roles == ["legal", "compliance", "pr", "council-fr"]
    for user in ("lena", "carlos", "priya"):
        view = await approvals.decide(gate.id, user=user, verdict="approve")
    assert view.pending_roles == ["council-fr"]
    await approvals.decide(gate.id, user="fabienne", verdict="approve")
    await settled(review, gate.id)
    assert review.status("welcome", 1, "fr").status == "approved"


async def test_no_decision_by_the_deadline_sends_it_back(review: Review) -> None:
    review.edit("welcome.yaml", "Start by creating", "Begin by creating")
    gate = await review.submit("welcome")
    await review.stack.env.sleep(timedelta(days=2, hours=1))
    await settled(review, gate.id)

    version = review.status("welcome", 2)
    assert version.status == "draft"
    assert version.comment == "no decision by the review deadline"
    # Reminders went to legal, the stage that never decided: the notice and one a day.
    assert len(review.stack.outbox("lena@acme.example")) == 2
