"""The template repository: versions, translations, their review, and what a send uses.

A version (and a translation revision) is a draft while its author edits
it; pushing changed content updates the draft in place. Once submitted its
content never changes: a later push makes the next version. Review moves it
`in_review -> approved | rejected`; `retired` takes an approved version out
of use. Every change is a line in `template_history` with who and when.

A send uses the newest approved version (or the version its step pins),
and for the recipient's locale chain the first translation that fits;
translations of an older source version are "stale" and are used or
skipped as the template declares.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from sqlmodel import Session, col, select

from tidings.content.environment import locale_chain
from tidings.content.files import TemplateLibrary, check_translation
from tidings.content.lint import ComplianceConfig, Finding, review_findings
from tidings.content.spec import StoredTemplate, TranslationSpec, Variants
from tidings.errors import SpecError, TidingsError
from tidings.models.tables import TemplateEventRecord, TemplateVersionRecord, TranslationRecord

DRAFT = "draft"
IN_REVIEW = "in_review"
APPROVED = "approved"
REJECTED = "rejected"
RETIRED = "retired"
SENDABLE_DRAFTS = (DRAFT, IN_REVIEW, APPROVED)
"""What a send may use where drafts are allowed (`tidings dev`)."""

Record = TemplateVersionRecord | TranslationRecord


class TemplateError(TidingsError):
    """A repository operation cannot be done; the message says why and what to do."""


class LintFailed(TemplateError):
    def __init__(self, what: str, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "\n  ".join(str(f) for f in findings)
        super().__init__(
            f"{what} fails compliance lint, so it stays a draft; fix the template files, "
            f"push, and submit again:\n  {lines}"
        )


@dataclass(frozen=True)
class Pushed:
    """What one push did to one template or translation."""

    template: str
    version: int
    """The source version; for a translation, the one it translates."""
    change: str
    """created, edited (a draft in place), or unchanged."""
    status: str
    locale: str | None = None
    revision: int | None = None
    stale_of: int | None = None
    """For a translation: the newer source version it does not translate yet."""


@dataclass(frozen=True)
class Resolved:
    """The content a send renders: a version, and the translation chosen for a locale."""

    template: str
    version: int
    stored: StoredTemplate
    locale: str
    content: Variants
    fallback: Variants | None
    translation_revision: int | None = None
    notes: list[str] = field(default_factory=list)
    """Stale translations used or skipped, for the audit."""


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# Push


def push(*, session: Session, library: TemplateLibrary, actor: str, now: datetime) -> list[Pushed]:
    """Store every template and translation in `library`; all or nothing.

    Translations are checked against the stored source version they say
    they translate; a version that does not exist is an error.
    """
    results = [
        _push_version(session, name, source.stored, actor, now)
        for name, source in sorted(library.templates.items())
    ]
    problems: list[str] = []
    for name, source in sorted(library.templates.items()):
        for locale, path in sorted(source.translation_paths.items()):
            translates = source.translations[locale].translates
            target = version(session=session, template=name, number=translates)
            if target is None:
                latest = _latest_version(session, name)
                problems.append(
                    f"{path}: translates version {translates} of {name!r}, which does not "
                    f"exist (the latest is {latest.version if latest else 'none'}); set "
                    "`translates:` to the version you translated"
                )
                continue
            try:
                translation = check_translation(path, stored_template(target))
            except SpecError as err:
                problems += err.problems
                continue
            results.append(_push_translation(session, name, locale, translation, actor, now))
    if problems:
        raise SpecError(problems)
    return results


def _push_version(
    session: Session, name: str, stored: StoredTemplate, actor: str, now: datetime
) -> Pushed:
    content = stored.model_dump(mode="json")
    digest = content_hash(content)
    latest = _latest_version(session, name)
    if latest is not None and latest.content_hash == digest:
        return Pushed(name, latest.version, "unchanged", latest.status)
    if latest is not None and latest.status == DRAFT:
        latest.content, latest.content_hash, latest.updated_at = content, digest, now
        session.add(latest)
        _event(session, name, latest.version, None, "edited", actor, None, now)
        return Pushed(name, latest.version, "edited", DRAFT)
    number = latest.version + 1 if latest else 1
    session.add(
        TemplateVersionRecord(
            template=name,
            version=number,
            status=DRAFT,
            content=content,
            content_hash=digest,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    _event(session, name, number, None, "created", actor, None, now)
    return Pushed(name, number, "created", DRAFT)


def _push_translation(
    session: Session,
    name: str,
    locale: str,
    translation: TranslationSpec,
    actor: str,
    now: datetime,
) -> Pushed:
    content = translation.model_dump(mode="json")
    digest = content_hash(content)
    latest = _latest_translation(session, name, locale)
    newest = _latest_version(session, name)
    stale_of = newest.version if newest and newest.version > translation.translates else None

    def pushed(revision: int, change: str, status: str) -> Pushed:
        return Pushed(name, translation.translates, change, status, locale, revision, stale_of)

    if latest is not None and latest.content_hash == digest:
        return pushed(latest.revision, "unchanged", latest.status)
    if latest is not None and latest.status == DRAFT:
        latest.content, latest.content_hash = content, digest
        latest.source_version, latest.updated_at = translation.translates, now
        session.add(latest)
        _event(session, name, translation.translates, locale, "edited", actor, None, now)
        return pushed(latest.revision, "edited", DRAFT)
    revision = latest.revision + 1 if latest else 1
    session.add(
        TranslationRecord(
            template=name,
            locale=locale,
            revision=revision,
            source_version=translation.translates,
            status=DRAFT,
            content=content,
            content_hash=digest,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    _event(session, name, translation.translates, locale, "created", actor, None, now)
    return pushed(revision, "created", DRAFT)


# Review


def submit(
    *,
    session: Session,
    template: str,
    number: int | None,
    locale: str | None,
    actor: str,
    compliance: ComplianceConfig,
    now: datetime,
) -> Record:
    """Send a draft for review, if it passes compliance lint; its content is then frozen."""
    record = _target(session, template, number, locale, default_status=DRAFT)
    _require(record, DRAFT, "submit", "only drafts are submitted")
    findings = review_lint(session=session, record=record, compliance=compliance)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise LintFailed(_describe(record), errors)
    return _move(session, record, IN_REVIEW, "submitted", actor, None, now)


def approve(
    *,
    session: Session,
    template: str,
    number: int | None,
    locale: str | None,
    actor: str,
    comment: str | None,
    now: datetime,
) -> Record:
    record = _target(session, template, number, locale, default_status=IN_REVIEW)
    _require(record, IN_REVIEW, "approve", "submit it for review first")
    authors = _authors(session, record)
    if actor in authors:
        raise TemplateError(
            f"{_describe(record)} was written or submitted by {actor!r}; another person "
            "must approve it (four eyes): pass --as with the reviewer's name"
        )
    record.decided_by, record.decided_at = actor, now
    return _move(session, record, APPROVED, "approved", actor, comment, now)


def reject(
    *,
    session: Session,
    template: str,
    number: int | None,
    locale: str | None,
    actor: str,
    comment: str,
    now: datetime,
) -> Record:
    record = _target(session, template, number, locale, default_status=IN_REVIEW)
    _require(record, IN_REVIEW, "reject", "only versions in review are rejected")
    if not comment.strip():
        raise TemplateError("say why it is rejected (--comment), so the author can fix it")
    record.decided_by, record.decided_at = actor, now
    return _move(session, record, REJECTED, "rejected", actor, comment, now)


def settle_review(
    *,
    session: Session,
    template: str,
    number: int,
    locale: str | None,
    approved: bool,
    reviewers: list[str],
    comment: str,
    now: datetime,
) -> Record:
    """The review workflow's outcome: approved, or back to draft with the reviewers'
    comments (the author edits it in place and submits again). Settling twice (a
    retried activity) changes nothing."""
    record = _target(session, template, number, locale, default_status=IN_REVIEW)
    if record.status != IN_REVIEW:
        return record
    actor = ", ".join(reviewers)[:100] or "review deadline"
    if approved:
        record.decided_by, record.decided_at = actor, now
        return _move(session, record, APPROVED, "approved", actor, comment or None, now)
    return _move(session, record, DRAFT, "sent back", actor, comment, now)


def in_review(*, session: Session, template: str, number: int | None, locale: str | None) -> Record:
    return _target(session, template, number, locale, default_status=IN_REVIEW)


def authors(*, session: Session, record: Record) -> set[str]:
    """Who wrote or submitted this version: none of them may approve it (four eyes)."""
    return _authors(session, record)


def retire(
    *,
    session: Session,
    template: str,
    number: int,
    locale: str | None,
    actor: str,
    comment: str | None,
    now: datetime,
) -> Record:
    record = _target(session, template, number, locale, default_status=None)
    _require(record, APPROVED, "retire", "only approved versions are retired")
    return _move(session, record, RETIRED, "retired", actor, comment, now)


def review_lint(*, session: Session, record: Record, compliance: ComplianceConfig) -> list[Finding]:
    """Lint a version or translation for every market and its declared purpose."""
    if isinstance(record, TranslationRecord):
        source = version(session=session, template=record.template, number=record.source_version)
        assert source is not None
        stored = stored_template(source)
        content: Variants = TranslationSpec.model_validate(record.content)
        locale = record.locale
    else:
        stored = stored_template(record)
        content, locale = stored.spec, stored.spec.source_locale
    return review_findings(compliance, stored, content, locale)


def _require(record: Record, status: str, verb: str, hint: str) -> None:
    if record.status != status:
        raise TemplateError(f"cannot {verb} {_describe(record)}: it is {record.status}; {hint}")


def _move(
    session: Session,
    record: Record,
    status: str,
    action: str,
    actor: str,
    comment: str | None,
    now: datetime,
) -> Record:
    record.status, record.updated_at = status, now
    if comment:
        record.comment = comment
    session.add(record)
    number = record.source_version if isinstance(record, TranslationRecord) else record.version
    locale = record.locale if isinstance(record, TranslationRecord) else None
    _event(session, record.template, number, locale, action, actor, comment, now)
    return record


def _authors(session: Session, record: Record) -> set[str]:
    """Who created, edited or submitted this version or translation revision."""
    rows = session.exec(
        select(TemplateEventRecord).where(
            TemplateEventRecord.template == record.template,
            col(TemplateEventRecord.action).in_(["created", "edited", "submitted"]),
            col(TemplateEventRecord.at) >= record.created_at,
        )
    ).all()
    if isinstance(record, TranslationRecord):
        mine = [r for r in rows if r.locale == record.locale]
    else:
        mine = [r for r in rows if r.locale is None and r.version == record.version]
    return {record.created_by} | {r.actor for r in mine}


def _target(
    session: Session,
    template: str,
    number: int | None,
    locale: str | None,
    *,
    default_status: str | None,
) -> Record:
    """The version (or, with a locale, the translation revision) an operation is about.

    Without a number: the newest one in `default_status`.
    """
    record: Record | None
    if locale is None:
        query = select(TemplateVersionRecord).where(TemplateVersionRecord.template == template)
        if number is not None:
            query = query.where(TemplateVersionRecord.version == number)
        elif default_status is not None:
            query = query.where(TemplateVersionRecord.status == default_status)
        record = session.exec(query.order_by(col(TemplateVersionRecord.version).desc())).first()
    else:
        tquery = select(TranslationRecord).where(
            TranslationRecord.template == template, TranslationRecord.locale == locale
        )
        if number is not None:
            tquery = tquery.where(TranslationRecord.source_version == number)
        if default_status is not None:
            tquery = tquery.where(TranslationRecord.status == default_status)
        record = session.exec(tquery.order_by(col(TranslationRecord.revision).desc())).first()
    if record is None:
        _missing(session, template, number, locale, default_status)
    assert record is not None
    return record


def _missing(
    session: Session, template: str, number: int | None, locale: str | None, status: str | None
) -> None:
    if _latest_version(session, template) is None:
        raise TemplateError(
            f"template {template!r} is not in the repository; push it first: tidings templates push"
        )
    what = f"{template!r}" + (f" ({locale})" if locale else "")
    which = f"version {number}" if number is not None else f"{status} version"
    raise TemplateError(
        f"{what} has no {which}; see `tidings templates history {template}` for what there is"
    )


def _describe(record: Record) -> str:
    if isinstance(record, TranslationRecord):
        return (
            f"{record.template!r} {record.locale} translation revision {record.revision} "
            f"(of version {record.source_version})"
        )
    return f"{record.template!r} version {record.version}"


def _event(
    session: Session,
    template: str,
    number: int | None,
    locale: str | None,
    action: str,
    actor: str,
    comment: str | None,
    now: datetime,
) -> None:
    session.add(
        TemplateEventRecord(
            template=template,
            version=number,
            locale=locale,
            action=action,
            actor=actor,
            comment=comment,
            at=now,
        )
    )


# Reading


def version(*, session: Session, template: str, number: int) -> TemplateVersionRecord | None:
    return session.exec(
        select(TemplateVersionRecord).where(
            TemplateVersionRecord.template == template, TemplateVersionRecord.version == number
        )
    ).first()


def versions(*, session: Session, template: str | None = None) -> list[TemplateVersionRecord]:
    query = select(TemplateVersionRecord)
    if template is not None:
        query = query.where(TemplateVersionRecord.template == template)
    order = (col(TemplateVersionRecord.template), col(TemplateVersionRecord.version))
    return list(session.exec(query.order_by(*order)).all())


def translations(*, session: Session, template: str) -> list[TranslationRecord]:
    return list(
        session.exec(
            select(TranslationRecord)
            .where(TranslationRecord.template == template)
            .order_by(col(TranslationRecord.locale), col(TranslationRecord.revision))
        ).all()
    )


def history(*, session: Session, template: str) -> list[TemplateEventRecord]:
    rows = session.exec(
        select(TemplateEventRecord)
        .where(TemplateEventRecord.template == template)
        .order_by(col(TemplateEventRecord.at), col(TemplateEventRecord.id))
    ).all()
    if not rows:
        raise TemplateError(
            f"template {template!r} has no history: it was never pushed (tidings templates push)"
        )
    return list(rows)


def diff(*, session: Session, template: str, old: int, new: int) -> str:
    """A unified diff of two versions' content (parts, declarations, partials)."""
    texts = []
    for number in (old, new):
        record = version(session=session, template=template, number=number)
        if record is None:
            _missing(session, template, number, None, None)
        assert record is not None
        texts.append(yaml.safe_dump(record.content, allow_unicode=True, sort_keys=False))
    return "".join(
        difflib.unified_diff(
            texts[0].splitlines(keepends=True),
            texts[1].splitlines(keepends=True),
            fromfile=f"{template} v{old}",
            tofile=f"{template} v{new}",
        )
    )


def stored_template(record: TemplateVersionRecord) -> StoredTemplate:
    return StoredTemplate.model_validate(record.content)


def _latest_version(session: Session, template: str) -> TemplateVersionRecord | None:
    return session.exec(
        select(TemplateVersionRecord)
        .where(TemplateVersionRecord.template == template)
        .order_by(col(TemplateVersionRecord.version).desc())
    ).first()


def _latest_translation(session: Session, template: str, locale: str) -> TranslationRecord | None:
    return session.exec(
        select(TranslationRecord)
        .where(TranslationRecord.template == template, TranslationRecord.locale == locale)
        .order_by(col(TranslationRecord.revision).desc())
    ).first()


# Resolution at send time


def resolve(
    *,
    session: Session,
    template: str,
    pinned: int | None,
    locale: str | None,
    channel: str,
    allow_drafts: bool,
) -> Resolved:
    """The version and translation a send to a contact with `locale` renders on `channel`."""
    usable = SENDABLE_DRAFTS if allow_drafts else (APPROVED,)
    record = _sendable_version(session, template, pinned, usable)
    stored = stored_template(record)
    spec = stored.spec
    if channel not in spec.channels():
        raise TemplateError(
            f"template {template!r} version {record.version} has no {channel} variant; add "
            f"`{channel}:` to templates/{template}.yaml, or send it on "
            f"{' or '.join(spec.channels())}"
        )
    notes: list[str] = []
    by_locale = _translations_for(session, template, record.version, usable)
    for tag in locale_chain(locale, spec.source_locale):
        if tag.lower() == spec.source_locale.lower():
            return Resolved(
                template,
                record.version,
                stored,
                spec.source_locale,
                spec,
                spec.fallback,
                None,
                notes,
            )
        found = by_locale.get(tag.lower())
        if found is None:
            continue
        translation = TranslationSpec.model_validate(found.content)
        if channel not in translation.channels():
            continue
        if found.source_version != record.version:
            stale = (
                f"the {tag} translation (revision {found.revision}) is of version "
                f"{found.source_version}, not {record.version}"
            )
            if spec.stale_translations == "skip":
                notes.append(f"skipped stale translation: {stale}")
                continue
            notes.append(f"used stale translation: {stale}")
        return Resolved(
            template,
            record.version,
            stored,
            found.locale,
            translation,
            translation.fallback,
            found.revision,
            notes,
        )
    raise AssertionError("the chain ends with the source locale")


def _sendable_version(
    session: Session, template: str, pinned: int | None, usable: tuple[str, ...]
) -> TemplateVersionRecord:
    if pinned is not None:
        record = version(session=session, template=template, number=pinned)
        if record is None or record.status not in usable:
            state = "does not exist" if record is None else f"is {record.status}"
            raise TemplateError(
                f"the step pins version {pinned} of template {template!r}, which {state}; "
                "approve it, or pin another version"
            )
        return record
    found = session.exec(
        select(TemplateVersionRecord)
        .where(
            TemplateVersionRecord.template == template,
            col(TemplateVersionRecord.status).in_(usable),
        )
        .order_by(col(TemplateVersionRecord.version).desc())
    ).first()
    if found is None:
        if _latest_version(session, template) is None:
            raise TemplateError(
                f"template {template!r} is not in the repository; push it: tidings templates push"
            )
        raise TemplateError(
            f"template {template!r} has no approved version; submit and approve one "
            f"(tidings templates submit {template}, then approve --as REVIEWER)"
        )
    return found


def _translations_for(
    session: Session, template: str, number: int, usable: tuple[str, ...]
) -> dict[str, TranslationRecord]:
    """Per locale (lowercased), the newest usable revision translating `number`
    or an older version."""
    rows = session.exec(
        select(TranslationRecord).where(
            TranslationRecord.template == template,
            col(TranslationRecord.status).in_(usable),
            col(TranslationRecord.source_version) <= number,
        )
    ).all()
    best: dict[str, TranslationRecord] = {}
    for row in sorted(rows, key=lambda r: (r.source_version, r.revision)):
        best[row.locale.lower()] = row
    return best
