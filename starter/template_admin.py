"""Template repository operations for people and tools: push, review, history, preview.

Everything works on the app database and the template files alone; no
Temporal server is needed. Each operation is one transaction: a push with
one bad file stores nothing, a refused approval changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from tidings.activities.compose import Composed, ComposeError, ComposeRequest
from tidings.content.files import load_library
from tidings.content.lint import ComplianceConfig, Finding, load_compliance, review_findings
from tidings.db import approvals, templates
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.models.events import JourneyEvent
from tidings.models.primitives import Purpose
from tidings.models.tables import TemplateEventRecord, TemplateVersionRecord, TranslationRecord
from tidings.settings import Settings
from tidings.worker import composer


class PreviewError(TidingsError):
    """Nothing would be sent; the message says why."""


class TemplateAdmin:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    @property
    def compliance(self) -> ComplianceConfig:
        return load_compliance(self.settings.compliance_file)

    def push(self, actor: str) -> list[templates.Pushed]:
        library = load_library(self.settings.templates_dir)
        with self.database.session() as session:
            return templates.push(session=session, library=library, actor=actor, now=_now())

    def lint_files(self) -> dict[str, list[Finding]]:
        """Review lint over the files as they are, before they are pushed."""
        library = load_library(self.settings.templates_dir)
        compliance = self.compliance
        found: dict[str, list[Finding]] = {}
        for _, source in sorted(library.templates.items()):
            found[str(source.path)] = review_findings(
                compliance, source.stored, source.spec, source.spec.source_locale
            )
            for locale, translation in sorted(source.translations.items()):
                path = str(source.translation_paths[locale])
                found[path] = review_findings(compliance, source.stored, translation, locale)
        return found

    def submit(
        self, template: str, *, number: int | None, locale: str | None, actor: str
    ) -> templates.Record:
        return self._review(
            templates.submit,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            compliance=self.compliance,
        )

    def approve(
        self,
        template: str,
        *,
        number: int | None,
        locale: str | None,
        actor: str,
        comment: str | None,
    ) -> templates.Record:
        return self._review(
            templates.approve,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            comment=comment,
        )

    def reject(
        self, template: str, *, number: int | None, locale: str | None, actor: str, comment: str
    ) -> templates.Record:
        return self._review(
            templates.reject,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            comment=comment,
        )

    def retire(
        self, template: str, *, number: int, locale: str | None, actor: str, comment: str | None
    ) -> templates.Record:
        return self._review(
            templates.retire,
            template=template,
            number=number,
            locale=locale,
            actor=actor,
            comment=comment,
        )

    def _review(
        self, operation: Callable[..., templates.Record], **arguments: Any
    ) -> templates.Record:
        """One review step in its own transaction, at the current time. A template
        under the review workflow is decided there, stage by stage, not directly."""
        with self.database.session() as session:
            if operation in (templates.approve, templates.reject) and (
                gate := approvals.open_review_of(session=session, template=arguments["template"])
            ):
                raise templates.TemplateError(
                    f"{arguments['template']} is in the review workflow (gate {gate}): decide "
                    f"with `tidings approvals approve|reject {gate} --as USER`"
                )
            return operation(session=session, now=_now(), **arguments)

    def versions(
        self, template: str | None = None
    ) -> list[tuple[TemplateVersionRecord, list[TranslationRecord]]]:
        with self.database.session() as session:
            found = []
            for record in templates.versions(session=session, template=template):
                translations = [
                    t
                    for t in templates.translations(session=session, template=record.template)
                    if t.source_version == record.version
                ]
                found.append((record, translations))
            return found

    def history(self, template: str) -> list[TemplateEventRecord]:
        with self.database.session() as session:
            return templates.history(session=session, template=template)

    def diff(self, template: str, old: int, new: int) -> str:
        with self.database.session() as session:
            return templates.diff(session=session, template=template, old=old, new=new)

    def preview(
        self,
        template: str,
        *,
        contact_key: str,
        channel: str = "email",
        locale: str | None = None,
        purpose: Purpose | None = None,
        topic: str = "general",
        version: int | None = None,
        properties: dict[str, JsonValue] | None = None,
        allow_drafts: bool | None = None,
    ) -> Composed:
        """Exactly what a send of `template` to the contact would be, now.

        `properties` stand in for the triggering event's. The purpose is the
        template's own unless given. Drafts are previewed where sends may use
        them (`TIDINGS_SEND_DRAFTS`) or when asked.
        """
        settings = self.settings
        if allow_drafts is not None:
            settings = settings.model_copy(update={"send_drafts": allow_drafts})
        library = load_library(self.settings.templates_dir)
        event = JourneyEvent(
            event_id="preview",
            name="preview",
            properties=properties or {},
            occurred_at=_now(),
        )
        request = ComposeRequest(
            template=template,
            channel=channel,
            contact_key=contact_key,
            purpose=purpose or "marketing",
            topic=topic,
            pinned=version,
            trigger=event,
            event=event,
            locale=locale,
        )
        preview = composer(settings, library.brand)
        try:
            with self.database.session() as session:
                prepared = preview.prepare(session, request)
            if purpose is None:
                # What the version is written for; a template that says nothing is
                # checked as marketing, the strictest.
                declared = prepared.resolved.stored.spec.purpose or "marketing"
                request = request.model_copy(update={"purpose": declared})
            return preview.finish(prepared, request)
        except ComposeError as err:
            hint = "" if settings.send_drafts else " (to preview a draft, add --drafts)"
            raise PreviewError(f"nothing would be sent ({err.status}): {err}{hint}") from None
        finally:
            preview.lookups.close()


def _now() -> datetime:
    return datetime.now(UTC)
