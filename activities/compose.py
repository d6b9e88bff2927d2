"""Composing one message for one contact: what the send activity sends and preview shows.

Both go through `Composer`, so a preview is exactly what would be sent:
the same version and translation, the same declared data, lookups,
fallback, unsubscribe link, headers and send-time compliance lint.

Composition is split at the database boundary: `prepare` reads (in the
caller's transaction) the version, the translation and the declared
contact fields; `finish` does the lookups over HTTP and renders, outside
any transaction, so a slow catalog service never holds a database lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, JsonValue
from sqlmodel import Session

from tidings.content.files import Brand
from tidings.content.lint import ComplianceConfig, Finding, Scope, lint, rendered_parts
from tidings.content.lookups import LookupClient
from tidings.content.render import ContactFields, Inputs, RenderError, declared_data, render
from tidings.content.sms import SmsSize, sms_size
from tidings.content.unsubscribe import make_token, unsubscribe_url
from tidings.db import templates
from tidings.db.contacts import primary_address
from tidings.db.deliveries import FAILED, SKIPPED
from tidings.models.events import JourneyEvent
from tidings.models.primitives import Purpose
from tidings.models.tables import Contact
from tidings.naming import ADDRESS_KINDS

ADDRESS_NAMES = {"email": "email address", "phone": "phone number", "push": "push token"}


class ComposeError(Exception):
    """Nothing can be sent: `status` is `failed` (fix the content) or `skipped`
    (there is no one to send to)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ComposeRequest(BaseModel):
    template: str
    channel: str = "email"
    contact_key: str
    purpose: Purpose
    topic: str = "general"
    pinned: int | None = None
    """A version the step pins; otherwise the newest approved one."""
    trigger: JourneyEvent
    event: JourneyEvent
    locale: str | None = None
    """Overrides the contact's locale (preview --locale)."""
    to_contact: bool = True
    """False for a message about the contact sent to someone else (an escalation's
    notice to staff): the contact's own address is then neither read nor needed."""


@dataclass(frozen=True)
class Prepared:
    """What `prepare` read from the database."""

    resolved: templates.Resolved
    contact: ContactFields
    jurisdiction: str | None
    to: str | None


class Composed(BaseModel):
    """A message ready for a provider, with where it came from."""

    template: str
    version: int
    translation_revision: int | None
    locale: str
    channel: str
    to: str | None
    parts: dict[str, str]
    headers: dict[str, str] = {}
    used_fallback: bool = False
    fallback_reason: str = ""
    notes: list[str] = []
    """Stale translations used or skipped, failed lookups: for the audit."""
    warnings: list[Finding] = []
    """Compliance findings that do not stop the send."""
    sms: SmsSize | None = None

    def audit_notes(self) -> list[str]:
        """What an auditor should know about how this message was composed."""
        found = list(self.notes)
        if self.used_fallback:
            found.append(f"used the fallback content: {self.fallback_reason}")
        found += [str(w) for w in self.warnings]
        return found


@dataclass(frozen=True)
class Composer:
    brand: Brand
    compliance: ComplianceConfig
    lookups: LookupClient
    public_url: str
    secret_key: str
    allow_drafts: bool
    default_timezone: str

    def prepare(self, session: Session, request: ComposeRequest) -> Prepared:
        contact = session.get(Contact, request.contact_key)
        if contact is None:
            raise ComposeError(SKIPPED, f"the contact {request.contact_key!r} no longer exists")
        to = None
        kind = ADDRESS_KINDS.get(request.channel) if request.to_contact else None
        if kind is not None:
            to = primary_address(session=session, key=contact.key, kind=kind)
            if to is None:
                raise ComposeError(SKIPPED, f"the contact has no {ADDRESS_NAMES[kind]}")
        try:
            resolved = templates.resolve(
                session=session,
                template=request.template,
                pinned=request.pinned,
                locale=request.locale or contact.locale,
                channel=request.channel,
                allow_drafts=self.allow_drafts,
            )
        except templates.TemplateError as err:
            raise ComposeError(FAILED, str(err)) from None
        traits = [
            name.split(".")[2]
            for name in resolved.stored.spec.fields
            if name.startswith("contact.traits.")
        ]
        fields = ContactFields(
            key=contact.key,
            timezone=contact.timezone or self.default_timezone,
            locale=contact.locale,
            traits={name: contact.traits[name] for name in traits if name in contact.traits},
        )
        return Prepared(resolved, fields, contact.jurisdiction, to)

    def finish(self, prepared: Prepared, request: ComposeRequest) -> Composed:
        resolved = prepared.resolved
        spec = resolved.stored.spec
        link = self.unsubscribe_link(request)
        inputs = Inputs(
            contact=prepared.contact,
            event=request.event,
            trigger=request.trigger,
            brand=self.brand.model_dump(),
            unsubscribe_url=link,
        )
        notes = list(resolved.notes)
        if spec.lookups:
            data, _ = declared_data(spec, inputs)
            results, failures = self.lookups.fetch(spec.lookups, data)
            inputs = inputs.model_copy(update={"lookups": results})
            notes += failures
        try:
            rendered = render(
                resolved.stored,
                template=request.template,
                channel=request.channel,
                content=resolved.content,
                fallback=resolved.fallback,
                locale=resolved.locale,
                inputs=inputs,
            )
        except RenderError as err:
            raise ComposeError(FAILED, str(err)) from None
        findings = lint(
            self.compliance,
            rendered_parts(request.channel, rendered.parts),
            Scope(
                locale=resolved.locale,
                purposes=[request.purpose],
                jurisdictions=[prepared.jurisdiction]
                if prepared.jurisdiction
                else self.compliance.markets,
            ),
            values=self._shown_values(link),
        )
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            lines = "; ".join(str(f) for f in errors)
            raise ComposeError(
                FAILED,
                f"template {request.template!r} version {resolved.version} fails compliance "
                f"lint for this recipient, so it was not sent: {lines}",
            )
        return Composed(
            template=request.template,
            version=resolved.version,
            translation_revision=resolved.translation_revision,
            locale=resolved.locale,
            channel=request.channel,
            to=prepared.to,
            parts=rendered.parts,
            headers=self._headers(request, link),
            used_fallback=rendered.used_fallback,
            fallback_reason=rendered.fallback_reason,
            notes=notes,
            warnings=[f for f in findings if f.severity != "error"],
            sms=sms_size(rendered.parts["text"]) if request.channel == "sms" else None,
        )

    def compose(self, session: Session, request: ComposeRequest) -> Composed:
        """Prepare and finish at once (preview; no lock is held long there)."""
        return self.finish(self.prepare(session, request), request)

    def unsubscribe_link(self, request: ComposeRequest) -> str:
        token = make_token(
            self.secret_key,
            contact_key=request.contact_key,
            topic=request.topic,
            template=request.template,
        )
        return unsubscribe_url(self.public_url, token)

    def _headers(self, request: ComposeRequest, link: str) -> dict[str, str]:
        if request.channel != "email" or request.purpose != "marketing":
            return {}
        # RFC 2369 and RFC 8058: mailbox providers show an unsubscribe button and
        # POST to the link themselves (one click, no page to visit).
        return {
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def _shown_values(self, link: str) -> dict[str, str]:
        values: dict[str, JsonValue] = {
            "unsubscribe_url": link,
            "brand.postal_address": self.brand.postal_address,
            "brand.company": self.brand.company,
        }
        return {name: str(value) for name, value in values.items() if value}
