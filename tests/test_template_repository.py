"""The template repository: push, review, history, diff, resolution at send time, the CLI.

Repository tests run on SQLite and PostgreSQL; each works on its own copy of
the example templates, edited as an author would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import AUTHOR, EXAMPLE_TEMPLATES, REVIEWER, copy_tree, publish
from typer.testing import CliRunner, Result

from tidings.content.files import load_library
from tidings.content.lint import load_compliance
from tidings.db import templates
from tidings.db.engine import Database
from tidings.db.templates import LintFailed, Pushed, Record, Resolved, TemplateError
from tidings.errors import SpecError
from tidings.models.tables import TemplateVersionRecord
from tidings.settings import PACKAGE_DIR
from tidings.starter.cli import app

COMPLIANCE = load_compliance(PACKAGE_DIR / "compliance.yaml")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ANN, BOB, CAT = "ann", "bob", "cat"

FIRST = "Start by creating your first project"
SECOND = "Start by creating a project"
"""welcome.yaml's text as shipped, and as an edit makes it."""


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    return copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'repo.db'}")
    try:
        yield db
    finally:
        db.dispose()


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in the file (it must be there)."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the file holding `needle`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return 1 + next(i for i, line in enumerate(lines) if needle in line)


def push(database: Database, directory: Path, actor: str, now: datetime) -> list[Pushed]:
    """What `tidings templates push` does: load the files, store them in one transaction."""
    library = load_library(directory)
    with database.session() as session:
        return templates.push(session=session, library=library, actor=actor, now=now)


def pushed_as(results: list[Pushed], template: str, locale: str | None = None) -> Pushed:
    [found] = [p for p in results if p.template == template and p.locale == locale]
    return found


def submit(
    database: Database,
    template: str,
    actor: str,
    now: datetime,
    *,
    number: int | None = None,
    locale: str | None = None,
) -> Record:
    with database.session() as session:
        return templates.submit(
            session=session,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            compliance=COMPLIANCE,
            now=now,
        )


def approve(
    database: Database,
    template: str,
    actor: str,
    now: datetime,
    *,
    number: int | None = None,
    locale: str | None = None,
    comment: str | None = None,
) -> Record:
    with database.session() as session:
        return templates.approve(
            session=session,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            comment=comment,
            now=now,
        )


def reject(database: Database, template: str, actor: str, now: datetime, comment: str) -> Record:
    with database.session() as session:
        return templates.reject(
            session=session,
            template=template,
            number=None,
            locale=None,
            actor=actor,
            comment=comment,
            now=now,
        )


def retire(database: Database, template: str, number: int, actor: str, now: datetime) -> Record:
    with database.session() as session:
        return templates.retire(
            session=session,
            template=template,
            number=number,
            locale=None,
            actor=actor,
            comment="superseded",
            now=now,
        )


def resolve(
    database: Database,
    template: str = "welcome",
    *,
    pinned: int | None = None,
    locale: str | None = None,
    allow_drafts: bool = False,
) -> Resolved:
    with database.session() as session:
        return templates.resolve(
            session=session,
            template=template,
            pinned=pinned,
            locale=locale,
            channel="email",
            allow_drafts=allow_drafts,
        )


def statuses(database: Database, template: str) -> dict[int, str]:
    with database.session() as session:
        return {r.version: r.status for r in templates.versions(session=session, template=template)}


def text_of(database: Database, template: str, number: int) -> str:
    with database.session() as session:
        record = templates.version(session=session, template=template, number=number)
        assert record is not None
        text = templates.stored_template(record).spec.email
        assert text is not None
        return text.text


def email_text(resolved: Resolved) -> str:
    assert resolved.content.email is not None
    return resolved.content.email.text


# Push-time errors: clear, by file (and line), and nothing stored


def test_a_template_syntax_error_names_the_file_and_the_line_in_it(
    library_dir: Path, sqlite: Database
) -> None:
    welcome = library_dir / "welcome.yaml"
    edit(welcome, "Welcome to {{ brand.company }}. Your", "Welcome to {{ brand.company }. Your")
    line = line_of(welcome, "{{ brand.company }. Your")
    assert line == 17  # the third line of the `text: |` block that starts on line 14
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [f"{welcome}:{line}: email.text: unexpected '}}'"]


def test_a_syntax_error_in_a_one_line_part_names_that_line(
    library_dir: Path, sqlite: Database
) -> None:
    welcome = library_dir / "welcome.yaml"
    edit(welcome, "preheader: Your {{ trigger.properties.plan }}", "preheader: Your {{ trigger.")
    line = line_of(welcome, "preheader:")
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    [problem] = caught.value.problems
    assert problem.startswith(f"{welcome}:{line}: email.preheader: ")
    assert line == 13


def test_a_syntax_error_in_a_translation_names_the_translation_file_and_line(
    library_dir: Path, sqlite: Database
) -> None:
    french = library_dir / "welcome.fr.yaml"
    edit(french, "L'équipe {{ brand.company }}\n", "L'équipe {{ brand.company }\n")
    line = line_of(french, "L'équipe {{ brand.company }")
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [f"{french}:{line}: email.text: unexpected '}}'"]
    assert line == 14


def test_reading_an_undeclared_field_is_refused_naming_the_file_part_and_fix(
    library_dir: Path, sqlite: Database
) -> None:
    welcome = library_dir / "welcome.yaml"
    edit(welcome, "The {{ brand.company }} team", "The {{ contact.traits.last_name }} team")
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [
        f"{welcome}: email.text: uses contact.traits.last_name but does not declare it; add it "
        "under `fields:` (e.g. `contact.traits.last_name: {default: ...}` or `: required`)"
    ]


@pytest.mark.parametrize("locale", ["zz", "xx-QQ", "fr-QQ", "fr_CA"])
def test_a_translation_file_named_for_an_unknown_locale_is_refused(
    library_dir: Path, sqlite: Database, locale: str
) -> None:
    bad = library_dir / f"welcome.{locale}.yaml"
    bad.write_text((library_dir / "welcome.fr.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [
        f"{bad}: the file name's locale: {locale!r} is not a locale babel knows; use a tag "
        "like fr-CA or de"
    ]


def test_a_translation_of_a_template_that_does_not_exist_is_refused(
    library_dir: Path, sqlite: Database
) -> None:
    orphan = library_dir / "welcom.fr.yaml"
    (library_dir / "welcome.fr.yaml").rename(orphan)
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [
        f"{orphan}: translates a template that does not exist: add templates/welcom.yaml or "
        "rename the file"
    ]


def test_including_a_missing_partial_names_it_and_the_partials_there_are(
    library_dir: Path, sqlite: Database
) -> None:
    welcome = library_dir / "welcome.yaml"
    edit(welcome, '{% include "legal.txt" %}', '{% include "missing.html" %}')
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    assert caught.value.problems == [
        f"{welcome}: email.text: includes 'missing.html', which is not in templates/_partials/ "
        "(there: footer.html, footer.txt, layout.html, legal.html, legal.txt)"
    ]


def test_a_broken_partial_is_named_with_its_line(library_dir: Path, sqlite: Database) -> None:
    legal = library_dir / "_partials" / "legal.txt"
    edit(legal, "{{ brand.postal_address }}", "{{ brand.postal_address }")
    with pytest.raises(SpecError) as caught:
        push(sqlite, library_dir, ANN, at(0))
    # Five templates include it; it is reported once, by its real path.
    assert caught.value.problems == [f"{legal}:3: unexpected '}}'"]


def test_a_translation_of_a_version_that_does_not_exist_is_refused_and_nothing_is_stored(
    library_dir: Path, database: Database
) -> None:
    french = library_dir / "welcome.fr.yaml"
    edit(french, "translates: 1", "translates: 9")
    with pytest.raises(SpecError) as caught:
        push(database, library_dir, ANN, at(0))
    assert caught.value.problems == [
        f"{french}: translates version 9 of 'welcome', which does not exist (the latest is 1); "
        "set `translates:` to the version you translated"
    ]
    with database.session() as session:
        assert templates.versions(session=session) == []
        assert templates.translations(session=session, template="welcome") == []
        with pytest.raises(TemplateError, match="'welcome' has no history: it was never pushed"):
            templates.history(session=session, template="welcome")


def test_a_failed_push_leaves_an_existing_repository_as_it_was(
    library_dir: Path, database: Database
) -> None:
    push(database, library_dir, ANN, at(0))
    submit(database, "welcome", ANN, at(1))
    edit(library_dir / "welcome.yaml", FIRST, SECOND)  # would be version 2
    edit(library_dir / "win-back.yaml", "It has been a month", "A month went by")  # an edit
    edit(library_dir / "welcome.fr.yaml", "translates: 1", "translates: 3")
    with pytest.raises(SpecError, match=r"translates version 3 of 'welcome', which does not exist"):
        push(database, library_dir, CAT, at(2))
    assert statuses(database, "welcome") == {1: "in_review"}
    assert FIRST in text_of(database, "welcome", 1)
    assert "It has been a month" in text_of(database, "win-back", 1)
    with database.session() as session:
        events = templates.history(session=session, template="win-back")
    assert [(e.action, e.actor) for e in events] == [("created", ANN)]


# Review: draft -> in_review -> approved | rejected, retired


def test_a_version_goes_from_draft_through_review_to_approved_and_retired(
    library_dir: Path, database: Database
) -> None:
    welcome = library_dir / "welcome.yaml"
    first = push(database, library_dir, ANN, at(0))
    assert len(first) == 13
    assert {(p.change, p.status) for p in first} == {("created", "draft")}
    assert pushed_as(first, "welcome") == Pushed("welcome", 1, "created", "draft")
    assert pushed_as(first, "welcome", "fr") == Pushed(
        "welcome", 1, "created", "draft", locale="fr", revision=1
    )

    # A draft is edited in place by a push, whoever pushes.
    edit(welcome, FIRST, "Start with your first project")
    second = push(database, library_dir, CAT, at(1))
    assert pushed_as(second, "welcome") == Pushed("welcome", 1, "edited", "draft")
    assert {p.change for p in second if p.template != "welcome" or p.locale} == {"unchanged"}
    assert statuses(database, "welcome") == {1: "draft"}
    assert "Start with your first project" in text_of(database, "welcome", 1)
    assert {p.change for p in push(database, library_dir, ANN, at(2))} == {"unchanged"}

    # Submitted, it is frozen: the next push makes version 2.
    submitted = submit(database, "welcome", ANN, at(3))
    assert isinstance(submitted, TemplateVersionRecord)
    assert (submitted.status, submitted.version) == ("in_review", 1)
    edit(welcome, "Start with your first project", "Create a project first")
    third = push(database, library_dir, ANN, at(4))
    assert pushed_as(third, "welcome") == Pushed("welcome", 2, "created", "draft")
    assert pushed_as(third, "welcome", "fr") == Pushed(
        "welcome", 1, "unchanged", "draft", locale="fr", revision=1, stale_of=2
    )
    assert statuses(database, "welcome") == {1: "in_review", 2: "draft"}
    assert "Start with your first project" in text_of(database, "welcome", 1)
    assert "Create a project first" in text_of(database, "welcome", 2)

    # Four eyes: neither its author nor the person who edited it may approve it.
    for actor in (ANN, CAT):
        with pytest.raises(TemplateError) as caught:
            approve(database, "welcome", actor, at(5), number=1)
        assert str(caught.value) == (
            f"'welcome' version 1 was written or submitted by {actor!r}; another person "
            "must approve it (four eyes): pass --as with the reviewer's name"
        )
    assert statuses(database, "welcome") == {1: "in_review", 2: "draft"}
    approved = approve(database, "welcome", BOB, at(6), comment="reads well")
    assert isinstance(approved, TemplateVersionRecord)
    assert (approved.version, approved.status, approved.decided_by) == (1, "approved", BOB)
    assert approved.decided_at == at(6)
    assert approved.comment == "reads well"

    # A send uses approved versions only, unless drafts are allowed (tidings dev).
    assert resolve(database).version == 1
    assert "Start with your first project" in email_text(resolve(database))
    assert resolve(database, allow_drafts=True).version == 2

    # Only approved versions are retired; only drafts are submitted.
    with pytest.raises(TemplateError) as caught:
        retire(database, "welcome", 2, BOB, at(7))
    assert str(caught.value) == (
        "cannot retire 'welcome' version 2: it is draft; only approved versions are retired"
    )
    with pytest.raises(TemplateError, match="cannot submit 'welcome' version 1: it is approved"):
        submit(database, "welcome", ANN, at(7), number=1)

    submit(database, "welcome", ANN, at(8))
    approve(database, "welcome", BOB, at(9))
    assert statuses(database, "welcome") == {1: "approved", 2: "approved"}
    newest = resolve(database)
    assert (newest.version, newest.locale, newest.notes) == (2, "en", [])
    assert "Create a project first" in email_text(newest)

    # A pinned version is used even when a newer one is approved.
    pinned = resolve(database, pinned=1)
    assert pinned.version == 1
    assert "Start with your first project" in email_text(pinned)

    # Retiring version 2 makes sends fall back to version 1.
    retired = retire(database, "welcome", 2, BOB, at(10))
    assert retired.status == "retired"
    assert resolve(database).version == 1
    assert resolve(database, allow_drafts=True).version == 1
    with pytest.raises(TemplateError) as caught:
        resolve(database, pinned=2)
    assert str(caught.value) == (
        "the step pins version 2 of template 'welcome', which is retired; approve it, or pin "
        "another version"
    )
    with pytest.raises(TemplateError, match="pins version 7 of template 'welcome', which does not"):
        resolve(database, pinned=7)


def test_a_send_finds_no_version_until_one_is_approved(
    library_dir: Path, database: Database
) -> None:
    with pytest.raises(TemplateError, match="template 'welcome' is not in the repository; push it"):
        resolve(database)
    push(database, library_dir, ANN, at(0))
    with pytest.raises(TemplateError) as caught:
        resolve(database)
    assert str(caught.value) == (
        "template 'welcome' has no approved version; submit and approve one "
        "(tidings templates submit welcome, then approve --as REVIEWER)"
    )
    submit(database, "welcome", ANN, at(1))
    with pytest.raises(TemplateError, match="has no approved version"):
        resolve(database)
    assert resolve(database, allow_drafts=True).version == 1
    approve(database, "welcome", BOB, at(2))
    assert resolve(database).version == 1


def test_rejecting_needs_a_reason_and_a_rejected_version_cannot_be_approved(
    library_dir: Path, database: Database
) -> None:
    push(database, library_dir, ANN, at(0))
    submit(database, "check-in", ANN, at(1))
    for blank in ("", "   "):
        with pytest.raises(TemplateError) as caught:
            reject(database, "check-in", BOB, at(2), blank)
        assert str(caught.value) == ("say why it is rejected (--comment), so the author can fix it")
    assert statuses(database, "check-in") == {1: "in_review"}
    rejected = reject(database, "check-in", BOB, at(3), "too long")
    assert (rejected.status, rejected.decided_by, rejected.comment) == ("rejected", BOB, "too long")
    with pytest.raises(TemplateError) as caught:
        approve(database, "check-in", BOB, at(4), number=1)
    assert str(caught.value) == (
        "cannot approve 'check-in' version 1: it is rejected; submit it for review first"
    )
    with pytest.raises(TemplateError, match=r"'check-in' has no .*in_review version"):
        approve(database, "check-in", BOB, at(4))
    # Unchanged files do not reopen it; an edit makes version 2.
    assert pushed_as(push(database, library_dir, ANN, at(5)), "check-in").change == "unchanged"
    edit(library_dir / "check-in.yaml", "Is anything in your way?", "Anything in your way?")
    assert pushed_as(push(database, library_dir, ANN, at(6)), "check-in") == Pushed(
        "check-in", 2, "created", "draft"
    )
    with database.session() as session:
        events = templates.history(session=session, template="check-in")
    assert [(e.action, e.version, e.actor, e.comment) for e in events] == [
        ("created", 1, ANN, None),
        ("submitted", 1, ANN, None),
        ("rejected", 1, BOB, "too long"),
        ("created", 2, ANN, None),
    ]


def test_a_marketing_template_without_its_unsubscribe_link_cannot_be_submitted(
    library_dir: Path, database: Database
) -> None:
    win_back = library_dir / "win-back.yaml"
    edit(win_back, '    {% include "footer.txt" %}\n', "")
    push(database, library_dir, ANN, at(0))
    with pytest.raises(LintFailed) as caught:
        submit(database, "win-back", ANN, at(1))
    assert [(f.rule, f.where, f.locale) for f in caught.value.findings] == [
        ("email.unsubscribe-link", "email.text", "en"),
        ("can-spam.postal-address", "email.text", "en"),
        ("casl.sender-identification", "email.text", "en"),
        ("casl.contact-information", "email.text", "en"),
    ]
    message = str(caught.value)
    assert message.startswith(
        "'win-back' version 1 fails compliance lint, so it stays a draft; fix the template "
        "files, push, and submit again:\n  error: email.unsubscribe-link [en] email.text: "
    )
    assert statuses(database, "win-back") == {1: "draft"}
    with database.session() as session:
        events = templates.history(session=session, template="win-back")
    assert [e.action for e in events] == ["created"]

    # Fixed and pushed, the same draft goes through.
    edit(
        win_back,
        "    It has been a month",
        '    {% include "footer.txt" %}\n    It has been a month',
    )
    assert pushed_as(push(database, library_dir, ANN, at(2)), "win-back").change == "edited"
    assert submit(database, "win-back", ANN, at(3)).status == "in_review"


def test_a_translation_is_reviewed_on_its_own_with_four_eyes(
    library_dir: Path, database: Database
) -> None:
    push(database, library_dir, ANN, at(0))
    submit(database, "welcome", ANN, at(1))
    approve(database, "welcome", BOB, at(2))
    # The translation is a draft: sends do not use it.
    assert resolve(database, locale="fr-CA").locale == "en"
    assert resolve(database, locale="fr-CA", allow_drafts=True).locale == "fr"
    submitted = submit(database, "welcome", ANN, at(3), locale="fr")
    assert submitted.status == "in_review"
    with pytest.raises(TemplateError) as caught:
        approve(database, "welcome", ANN, at(4), locale="fr")
    assert str(caught.value).startswith(
        "'welcome' fr translation revision 1 (of version 1) was written or submitted by 'ann'"
    )
    approve(database, "welcome", BOB, at(5), locale="fr")
    french = resolve(database, locale="fr-CA")
    assert (french.locale, french.version, french.translation_revision, french.notes) == (
        "fr",
        1,
        1,
        [],
    )


# History and diff


def test_history_lists_every_change_with_who_and_when_in_order(
    library_dir: Path, database: Database
) -> None:
    push(database, library_dir, ANN, at(0))
    edit(library_dir / "welcome.yaml", FIRST, "Start with your first project")
    push(database, library_dir, CAT, at(1))
    submit(database, "welcome", ANN, at(2))
    approve(database, "welcome", BOB, at(3), comment="ok")
    with database.session() as session:
        events = templates.history(session=session, template="welcome")
    assert [(e.action, e.version, e.locale, e.actor, e.comment, e.at) for e in events] == [
        ("created", 1, None, ANN, None, at(0)),
        ("created", 1, "fr", ANN, None, at(0)),
        ("edited", 1, None, CAT, None, at(1)),
        ("submitted", 1, None, ANN, None, at(2)),
        ("approved", 1, None, BOB, "ok", at(3)),
    ]


def test_diff_shows_the_changed_line_of_two_versions(library_dir: Path, database: Database) -> None:
    push(database, library_dir, ANN, at(0))
    submit(database, "welcome", ANN, at(1))
    edit(library_dir / "welcome.yaml", FIRST, SECOND)
    push(database, library_dir, ANN, at(2))
    with database.session() as session:
        changes = templates.diff(session=session, template="welcome", old=1, new=2)
        same = templates.diff(session=session, template="welcome", old=2, new=2)
        with pytest.raises(TemplateError, match="'welcome' has no version 3; see `tidings templ"):
            templates.diff(session=session, template="welcome", old=1, new=3)
    lines = changes.splitlines()
    assert lines[:2] == ["--- welcome v1", "+++ welcome v2"]
    removed = [x for x in lines[2:] if x.startswith("-")]
    added = [x for x in lines[2:] if x.startswith("+")]
    assert removed == [f"-      {FIRST}: https://app.acme.example/projects/new"]
    assert added == [f"+      {SECOND}: https://app.acme.example/projects/new"]
    assert same == ""


# Stale translations and the locale chain


@pytest.mark.parametrize("policy", ["use", "skip"])
def test_a_stale_translation_is_used_or_skipped_as_the_template_says(
    library_dir: Path, database: Database, policy: str
) -> None:
    publish(database, library_dir)
    current = resolve(database, locale="fr-CA")
    assert (current.version, current.locale, current.notes) == (1, "fr", [])

    welcome = library_dir / "welcome.yaml"
    edit(welcome, FIRST, SECOND)
    edit(welcome, "stale_translations: use", f"stale_translations: {policy}")
    pushed = publish(database, library_dir)
    assert pushed_as(pushed, "welcome") == Pushed("welcome", 2, "created", "draft")
    assert pushed_as(pushed, "welcome", "fr").stale_of == 2

    resolved = resolve(database, locale="fr-CA")
    stale = "the fr translation (revision 1) is of version 1, not 2"
    assert resolved.version == 2
    if policy == "use":
        assert (resolved.locale, resolved.translation_revision) == ("fr", 1)
        assert resolved.notes == [f"used stale translation: {stale}"]
        assert "Commencez par créer votre premier projet" in email_text(resolved)
    else:
        assert (resolved.locale, resolved.translation_revision) == ("en", None)
        assert resolved.notes == [f"skipped stale translation: {stale}"]
        assert SECOND in email_text(resolved)

    # A step pinned to version 1 has a current translation.
    pinned = resolve(database, pinned=1, locale="fr-CA")
    assert (pinned.version, pinned.locale, pinned.notes) == (1, "fr", [])


@pytest.mark.parametrize(
    ("locale", "chosen"),
    [("fr-CA", "fr"), ("fr", "fr"), ("FR-ca", "fr"), ("de", "en"), ("en-GB", "en"), (None, "en")],
)
def test_the_locale_chain_picks_the_closest_translation_then_the_source(
    library_dir: Path, sqlite: Database, locale: str | None, chosen: str
) -> None:
    publish(sqlite, library_dir)
    resolved = resolve(sqlite, locale=locale)
    assert (resolved.locale, resolved.notes) == (chosen, [])
    assert resolved.content.email is not None
    greeting = "Bienvenue chez" if chosen == "fr" else "Welcome to"
    assert resolved.content.email.subject.startswith(greeting)


def test_the_published_examples_are_all_approved(library_dir: Path, sqlite: Database) -> None:
    pushed = publish(sqlite, library_dir)
    assert len(pushed) == 13
    with sqlite.session() as session:
        assert {r.status for r in templates.versions(session=session)} == {"approved"}
        [french] = templates.translations(session=session, template="welcome")
        events = templates.history(session=session, template="welcome")
    assert (french.status, french.decided_by) == ("approved", REVIEWER)
    assert [(e.action, e.actor) for e in events if e.locale is None] == [
        ("created", AUTHOR),
        ("submitted", AUTHOR),
        ("approved", REVIEWER),
    ]


# The CLI


runner = CliRunner()


@pytest.fixture
def cli_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's data dir and templates dir point at temporary copies."""
    directory = copy_tree(EXAMPLE_TEMPLATES, tmp_path / "templates")
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_TEMPLATES_DIR", str(directory))
    for name in ("TIDINGS_DATABASE_URL", "TIDINGS_COMPLIANCE_FILE", "TIDINGS_USER"):
        monkeypatch.delenv(name, raising=False)
    return directory


def cli(*args: str) -> Result:
    return runner.invoke(app, ["templates", *args])


def ok(*args: str) -> list[str]:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_cli_pushes_lists_reviews_and_shows_history_and_diff(cli_templates: Path) -> None:
    assert ok("list") == ["the repository is empty: tidings templates push"]
    pushed = ok("push", "--as", ANN)
    assert "created   welcome v1  draft" in pushed
    assert "created   welcome fr revision 1 (of v1)  draft" in pushed
    assert len(pushed) == 13

    listed = ok("list")
    assert re.fullmatch(r"welcome\s+v1\s+draft\s*", _row(listed, "welcome"))
    assert any(re.fullmatch(r"\s+fr\s+rev 1\s+draft\s*", line) for line in listed)
    assert ok("list", "welcome")[0].startswith("welcome ")
    assert len(ok("list", "welcome")) == 2

    assert ok("submit", "welcome", "--as", ANN) == ["submitted welcome version 1: now in_review"]
    refused = cli("approve", "welcome", "--as", ANN)
    assert refused.exit_code == 1
    assert refused.output == (
        "error: 'welcome' version 1 was written or submitted by 'ann'; another person must "
        "approve it (four eyes): pass --as with the reviewer's name\n"
    )
    assert ok("approve", "welcome", "--as", BOB) == ["approved welcome version 1: now approved"]
    assert re.fullmatch(r"welcome\s+v1\s+approved\s+approved by bob", _row(ok("list"), "welcome"))

    history = ok("history", "welcome")
    assert len(history) == 4
    expected = [r"created\s+v1\s+ann", r"created\s+v1 fr\s+ann", r"submitted v1\s+ann"]
    expected.append(r"approved\s+v1\s+bob")
    for line, pattern in zip(history, expected, strict=True):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  " + pattern, line), line

    edit(cli_templates / "welcome.yaml", FIRST, SECOND)
    pushed = ok("push", "--as", ANN)
    assert "created   welcome v2  draft" in pushed
    assert "unchanged welcome fr revision 1 (of v1)  draft  stale: version 2 is newer" in pushed
    diff = ok("diff", "welcome", "1", "2")
    assert f"-      {FIRST}: https://app.acme.example/projects/new" in diff
    assert f"+      {SECOND}: https://app.acme.example/projects/new" in diff
    assert ok("diff", "welcome", "2", "2") == ["no difference"]

    missing = cli("history", "welcom")
    assert missing.exit_code == 1
    assert "error: template 'welcom' has no history: it was never pushed" in missing.output


def _row(lines: list[str], template: str) -> str:
    [row] = [line for line in lines if line.split()[:1] == [template]]
    return row


def test_the_cli_refuses_a_bad_push_and_stores_nothing(cli_templates: Path) -> None:
    welcome = cli_templates / "welcome.yaml"
    edit(welcome, "Welcome to {{ brand.company }}. Your", "Welcome to {{ brand.company }. Your")
    result = cli("push", "--as", ANN)
    assert result.exit_code == 1
    assert result.output == f"error: {welcome}:17: email.text: unexpected '}}'\n"
    assert ok("list") == ["the repository is empty: tidings templates push"]


def test_the_cli_reject_needs_a_reason(cli_templates: Path) -> None:
    ok("push", "--as", ANN)
    ok("submit", "check-in", "--as", ANN)
    blank = cli("reject", "check-in", "--as", BOB, "--comment", " ")
    assert blank.exit_code == 1
    assert "say why it is rejected (--comment)" in blank.output
    assert ok("reject", "check-in", "--as", BOB, "--comment", "too long") == [
        "rejected check-in version 1: now rejected"
    ]


def test_templates_lint_passes_the_examples_and_fails_without_the_footer(
    cli_templates: Path,
) -> None:
    assert ok("lint") == ["ok: 13 files pass compliance lint"]
    win_back = cli_templates / "win-back.yaml"
    edit(win_back, '    {% include "footer.txt" %}\n', "")
    result = cli("lint")
    assert result.exit_code == 1
    assert (
        f"{win_back}: error: email.unsubscribe-link [en] email.text: marketing email must "
        "carry a working unsubscribe link"
    ) in result.output
    assert "ok:" not in result.output
    assert "win-back-offer" not in result.output
