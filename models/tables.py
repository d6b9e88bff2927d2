"""Database tables (sqlmodel). Any SQLAlchemy database; SQLite and PostgreSQL are tested."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from tidings.push_subscriptions import MAX_ADDRESS


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no offset of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time(nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _json() -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


SCHEMA_VERSION = 8
"""Raise with every change to these tables; a database of another version is refused.
8: push identities, delivery and suppression addresses hold Web Push subscriptions
(up to 1024 characters). 7: identities, merges, the ingest queue and imports (issue 9).
6: the audit log's hash chains. 5: holds, approval gates and decisions, escalations.
4: the in-app inbox, deliveries.provider, delivery_events."""


class SchemaInfo(SQLModel, table=True):
    """One row: the schema version the database was created with."""

    __tablename__ = "schema_info"

    id: int = Field(default=1, primary_key=True)
    version: int


class Contact(SQLModel, table=True):
    """A person, known by a pseudonymous key; addresses live in identities."""

    __tablename__ = "contacts"

    key: str = Field(primary_key=True, max_length=128)
    timezone: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=35)
    jurisdiction: str | None = Field(default=None, max_length=8)
    traits: dict[str, Any] = _json()
    trait_times: dict[str, Any] = _json()
    """When each trait was last set (ISO time): a merge keeps the newer value of each."""
    anonymous: bool = False
    """Created for an anonymous id alone (a generated key): merged into the user it
    turns out to be by `contact_for` or `alias`."""
    merged_into: str | None = Field(default=None, max_length=128, index=True)
    """Set once merged: a tombstone, whose key resolves to the surviving contact."""
    created_at: datetime = _time()
    updated_at: datetime = _time()


class ContactIdentity(SQLModel, table=True):
    """An email, phone, device, push token, anonymous id or external id (per source
    system) of a contact; one contact may have several, each belongs to one contact."""

    __tablename__ = "contact_identities"
    __table_args__ = (
        UniqueConstraint("kind", "source", "value", name="uq_identity_kind_source_value"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_key: str = Field(foreign_key="contacts.key", index=True, max_length=128)
    kind: str = Field(max_length=16)
    source: str = Field(default="", max_length=32)
    """The system an external id belongs to (stripe, salesforce...); "" for other kinds."""
    value: str = Field(max_length=MAX_ADDRESS)
    created_at: datetime = _time()


class ContactMerge(SQLModel, table=True):
    """Two contacts found to be one person: `merged` became a tombstone of `survivor`.
    Never updated; listed by `tidings contacts merges KEY`."""

    __tablename__ = "contact_merges"

    id: int | None = Field(default=None, primary_key=True)
    survivor: str = Field(max_length=128, index=True)
    merged: str = Field(max_length=128, unique=True)
    evidence: str = Field(max_length=500)
    moved: dict[str, Any] = _json()
    """What moved to the survivor: counts by kind, traits taken, journeys continued/ended."""
    merged_at: datetime = _time()


class EventRecord(SQLModel, table=True):
    """Every event accepted by `track`; the event id makes `track` idempotent."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_contact_time", "contact_key", "occurred_at"),)

    event_id: str = Field(primary_key=True, max_length=128)
    contact_key: str = Field(max_length=128)
    name: str = Field(max_length=100)
    properties: dict[str, Any] = _json()
    occurred_at: datetime = _time()
    received_at: datetime = _time()
    routed_at: datetime | None = _time(nullable=True)


class ImportRecord(SQLModel, table=True):
    """A file imported by `tidings import contacts|events`, known by its content hash:
    the checkpoint a re-run of the same file continues after (`rows_done`)."""

    __tablename__ = "imports"

    content_hash: str = Field(primary_key=True, max_length=64)
    """SHA-256 of the file's bytes, hex."""
    kind: str = Field(primary_key=True, max_length=8)
    """contacts or events."""
    path: str = Field(max_length=1024)
    """Where the file was read from last (the hash, not the path, names the import)."""
    route: bool = False
    """Events only: routed into journeys (True) or recorded only; a resumed run keeps it."""
    rows_total: int = 0
    rows_done: int = 0
    """Rows 1..rows_done are settled: accepted or rejected, and counted below."""
    accepted: int = 0
    already_known: int = 0
    """Accepted rows whose event id had been recorded before (nothing new written)."""
    rejected: int = 0
    started_at: datetime = _time()
    updated_at: datetime = _time()
    finished_at: datetime | None = _time(nullable=True)


class JourneyRun(SQLModel, table=True):
    """One entry of a contact into a journey; outlives Temporal's retention."""

    __tablename__ = "journey_runs"
    __table_args__ = (
        UniqueConstraint("journey", "contact_key", "entry", name="uq_journey_run_entry"),
        Index("ix_journey_runs_contact", "contact_key", "exited_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    journey: str = Field(max_length=64)
    contact_key: str = Field(max_length=128)
    entry: int
    version: int
    workflow_id: str = Field(max_length=256)
    run_id: str = Field(max_length=64, unique=True)
    entered_at: datetime = _time()
    exited_at: datetime | None = _time(nullable=True)
    outcome: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=500)


class Delivery(SQLModel, table=True):
    """One message, written before the provider is called.

    The unique idempotency key (workflow id, entry, step, visit) is what makes
    a retried or replayed send activity find the earlier attempt instead of
    sending again. `counted_at` (the policy's clock when the send was
    claimed) is what frequency caps count.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_contact", "contact_key", "scheduled_at"),
        Index("ix_deliveries_counted", "contact_key", "counted_at"),
        # Provider callbacks name a message by the provider's id.
        Index("ix_deliveries_provider_message", "provider", "provider_message_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    idempotency_key: str = Field(unique=True, max_length=400)
    contact_key: str = Field(max_length=128)
    journey: str = Field(max_length=64)
    step_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    template: str = Field(max_length=100)
    template_version: int | None = None
    locale: str | None = Field(default=None, max_length=35)
    purpose: str = Field(max_length=16)
    topic: str | None = Field(default=None, max_length=64)
    to_address: str | None = Field(default=None, max_length=MAX_ADDRESS)
    status: str = Field(max_length=16)
    attempts: int = 0
    provider: str | None = Field(default=None, max_length=32)
    provider_message_id: str | None = Field(default=None, max_length=256)
    error: str | None = Field(default=None, max_length=1000)
    scheduled_at: datetime = _time()
    counted_at: datetime | None = _time(nullable=True)
    sent_at: datetime | None = _time(nullable=True)
    updated_at: datetime = _time()


class ConsentRecord(SQLModel, table=True):
    """One line of the consent ledger: never updated, never deleted.

    Current consent is derived from the lines (latest in scope wins), so the
    ledger answers "what did we know, when, and on what proof" for any date.
    """

    __tablename__ = "consent_ledger"
    __table_args__ = (Index("ix_consent_contact_channel", "contact_key", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    contact_key: str = Field(max_length=128)
    channel: str = Field(max_length=16)
    purpose: str | None = Field(default=None, max_length=16)
    topic: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=8)
    basis: str | None = Field(default=None, max_length=24)
    source: str = Field(max_length=200)
    proof: dict[str, Any] = _json()
    recorded_at: datetime = _time()
    effective_at: datetime = _time()
    expires_at: datetime | None = _time(nullable=True)


class SuppressionRecord(SQLModel, table=True):
    """A contact or an address that must not be sent to (until lifted)."""

    __tablename__ = "suppressions"

    id: int | None = Field(default=None, primary_key=True)
    contact_key: str | None = Field(default=None, max_length=128, index=True)
    channel: str | None = Field(default=None, max_length=16)
    address: str | None = Field(default=None, max_length=MAX_ADDRESS, index=True)
    reason: str = Field(max_length=24)
    note: str = Field(default="", max_length=500)
    created_at: datetime = _time()
    lifted_at: datetime | None = _time(nullable=True)


class PreferenceRecord(SQLModel, table=True):
    """A contact's choice for one topic on one channel (the subscription center)."""

    __tablename__ = "preferences"

    contact_key: str = Field(primary_key=True, max_length=128)
    channel: str = Field(primary_key=True, max_length=16)
    topic: str = Field(primary_key=True, max_length=64)
    subscribed: bool
    updated_at: datetime = _time()


class BlackoutRecord(SQLModel, table=True):
    """A holiday, a quiet period or an incident during which sends wait or are skipped."""

    __tablename__ = "blackouts"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    purposes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    starts_at: datetime = _time(index=True)
    ends_at: datetime = _time(index=True)
    action: str = Field(max_length=8)
    created_at: datetime = _time()


class HoldRecord(SQLModel, table=True):
    """A legal hold, pause or kill switch; active until lifted (rows are never deleted)."""

    __tablename__ = "holds"

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=200)
    """`all`, `journey:NAME`, `template:NAME`, `channel:NAME`, `jurisdiction:CODE`,
    `purpose:NAME`."""
    action: str = Field(max_length=8)
    """`hold` (wait at the next send) or `kill` (end at the next send)."""
    reason: str = Field(max_length=1000)
    set_by: str = Field(max_length=64)
    set_at: datetime = _time()
    lifted_by: str | None = Field(default=None, max_length=64)
    lifted_at: datetime | None = _time(nullable=True, index=True)
    lift_reason: str | None = Field(default=None, max_length=1000)


class AuditRecord(SQLModel, table=True):
    """Every decision (entry, exit, policy check, content, send, approval, hold), with
    the rule that made it and its inputs. Append-only (triggers refuse UPDATE and
    DELETE) and hash-chained per contact: see `tidings.db.audit_chain`."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_contact_time", "contact_key", "at"),
        Index("ix_audit_time", "at"),
        # One chain per contact ("" for system-wide records): two appends racing
        # for the same place cannot both commit, so a chain never forks.
        UniqueConstraint("contact_key", "seq", name="uq_audit_chain_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _time()
    contact_key: str = Field(max_length=128)
    """The chain the record belongs to: the contact's, or "" (holds, batch gates,
    template reviews)."""
    seq: int
    """1-based place in the chain."""
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    journey: str | None = Field(default=None, max_length=64)
    step_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=16)
    action: str = Field(max_length=24)
    rule: str = Field(max_length=200)
    detail: str = Field(default="", max_length=1000)
    data: dict[str, Any] = _json()


class TemplateVersionRecord(SQLModel, table=True):
    """One version of a template; its content never changes once submitted."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template", "version", name="uq_template_version"),)

    id: int | None = Field(default=None, primary_key=True)
    template: str = Field(max_length=100, index=True)
    version: int
    status: str = Field(max_length=12)
    content: dict[str, Any] = _json()
    content_hash: str = Field(max_length=64)
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()
    updated_at: datetime = _time()
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = _time(nullable=True)
    comment: str | None = Field(default=None, max_length=2000)


class TranslationRecord(SQLModel, table=True):
    """One revision of a template's translation into a locale, of one source version."""

    __tablename__ = "template_translations"
    __table_args__ = (
        UniqueConstraint("template", "locale", "revision", name="uq_translation_revision"),
    )

    id: int | None = Field(default=None, primary_key=True)
    template: str = Field(max_length=100, index=True)
    locale: str = Field(max_length=35)
    revision: int
    source_version: int
    status: str = Field(max_length=12)
    content: dict[str, Any] = _json()
    content_hash: str = Field(max_length=64)
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()
    updated_at: datetime = _time()
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = _time(nullable=True)
    comment: str | None = Field(default=None, max_length=2000)


class TemplateEventRecord(SQLModel, table=True):
    """Who did what to which template version or translation, when (the history)."""

    __tablename__ = "template_history"

    id: int | None = Field(default=None, primary_key=True)
    template: str = Field(max_length=100, index=True)
    version: int | None = None
    locale: str | None = Field(default=None, max_length=35)
    action: str = Field(max_length=16)
    actor: str = Field(max_length=100)
    comment: str | None = Field(default=None, max_length=2000)
    at: datetime = _time()


class InboxMessage(SQLModel, table=True):
    """One in-app message: the inbox is a channel whose provider is this database.

    `delivery_id` is unique so that a retried or replayed send finds the row the
    first attempt wrote instead of showing the message twice. Expired messages
    stay in the table (nothing deletes rows on read) but are never listed.
    """

    __tablename__ = "inbox_messages"
    # Expiry is swept by time across all contacts (`tidings inbox purge`).
    __table_args__ = (
        Index("ix_inbox_contact_time", "contact_key", "created_at"),
        Index("ix_inbox_expires", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    contact_key: str = Field(max_length=128)
    delivery_id: str = Field(unique=True, max_length=64)
    title: str = Field(max_length=200)
    body: str
    action: str | None = Field(default=None, max_length=2000)
    journey: str = Field(max_length=64)
    template: str = Field(max_length=100)
    created_at: datetime = _time()
    read_at: datetime | None = _time(nullable=True)
    archived_at: datetime | None = _time(nullable=True)
    expires_at: datetime | None = _time(nullable=True)


class DeliveryEventRecord(SQLModel, table=True):
    """What a provider later said about a delivery (delivered, bounced, failed...).

    Append-only: the history of one message, with the provider's own words.
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        Index("ix_delivery_events_delivery", "delivery_id", "at"),
        UniqueConstraint("provider", "provider_event_id", name="uq_delivery_event_provider"),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=32)
    status: str = Field(max_length=16)
    """queued, sent, delivered, bounced, failed, opened, clicked, complained."""
    provider: str = Field(max_length=32)
    provider_status: str = Field(max_length=64)
    provider_event_id: str = Field(max_length=128)
    """Deduplicates a callback the provider sends twice."""
    error_code: str | None = Field(default=None, max_length=32)
    at: datetime = _time()


class EscalationRecord(SQLModel, table=True):
    """An escalation as operators list it; the workflow decides, this is its copy.

    `id` is the short number staff type (`tidings escalations ack 12`);
    `workflow_id` is unique per journey entry, step and visit.
    """

    __tablename__ = "escalations"
    __table_args__ = (Index("ix_escalations_status", "status", "opened_at"),)

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(unique=True, max_length=400)
    journey: str = Field(max_length=64)
    contact_key: str = Field(max_length=128, index=True)
    entry: int
    step_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    """open, acknowledged, resolved, exhausted."""
    tier: int
    """The tier asked now, 1-based (0 before the first)."""
    tier_count: int
    resolved_by: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    acknowledged_by: str | None = Field(default=None, max_length=64)
    comment: str | None = Field(default=None, max_length=2000)
    resolved_event: str | None = Field(default=None, max_length=100)
    opened_at: datetime = _time()
    closed_at: datetime | None = _time(nullable=True)
    updated_at: datetime = _time()


class EscalationTierRecord(SQLModel, table=True):
    """One tier of an escalation: who was asked, when, and how it ended."""

    __tablename__ = "escalation_tiers"
    __table_args__ = (UniqueConstraint("escalation_id", "tier", name="uq_escalation_tier"),)

    id: int | None = Field(default=None, primary_key=True)
    escalation_id: int = Field(foreign_key="escalations.id")
    tier: int
    role: str = Field(max_length=40)
    channel: str = Field(max_length=16)
    notified: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    unreachable: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    notified_at: datetime = _time()
    due_at: datetime = _time()
    outcome: str = Field(max_length=16)
    """waiting, acknowledged, resolved, timed_out, unreachable."""
    acknowledged_by: str | None = Field(default=None, max_length=64)
    settled_at: datetime | None = _time(nullable=True)


class EscalationNotice(SQLModel, table=True):
    """One notice to one staff member for one tier, claimed before it is sent.

    The unique (escalation, tier, user) is what keeps a retried notify activity
    from telling anyone twice; statuses move as deliveries' do (sending ->
    sent | deferred | failed | uncertain; deferred -> sending).
    """

    __tablename__ = "escalation_notices"
    __table_args__ = (
        UniqueConstraint("escalation_workflow_id", "tier", "user", name="uq_escalation_notice"),
    )

    id: str = Field(primary_key=True, max_length=32)
    escalation_workflow_id: str = Field(max_length=400)
    tier: int
    user: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16)
    attempts: int = 1
    provider: str | None = Field(default=None, max_length=32)
    provider_message_id: str | None = Field(default=None, max_length=256)
    error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _time()
    sent_at: datetime | None = _time(nullable=True)
    updated_at: datetime = _time()


class ApprovalGateRecord(SQLModel, table=True):
    """An approval gate as approvers see it: the preview of the gated message and
    the votes so far. The workflow decides; this copy is for listing and reading."""

    __tablename__ = "approval_gates"
    __table_args__ = (Index("ix_approval_gates_status", "status", "deadline"),)

    id: str = Field(primary_key=True, max_length=32)
    gate_key: str = Field(unique=True, max_length=300)
    scope: str = Field(max_length=16)
    """contact: one journey's gate; batch: one gate for every contact at the step."""
    workflow_id: str = Field(max_length=300)
    journey: str = Field(max_length=64)
    journey_version: int
    step_id: str = Field(max_length=64)
    gated_step: str = Field(max_length=64)
    contact_key: str = Field(max_length=128)
    template: str = Field(max_length=100)
    channel: str = Field(max_length=16)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    quorum: int
    order: str = Field(max_length=16)
    status: str = Field(max_length=24)
    deadline: datetime = _time()
    created_at: datetime = _time()
    decided_at: datetime | None = _time(nullable=True)
    votes: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    pending_roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    preview: dict[str, Any] = _json()
    """The gated message rendered for this contact when the gate opened."""
    findings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ApprovalNotice(SQLModel, table=True):
    """A notice or reminder sent to an approver: once per gate, user and round."""

    __tablename__ = "approval_notices"
    __table_args__ = (UniqueConstraint("gate_id", "user", "round", name="uq_approval_notice"),)

    id: int | None = Field(default=None, primary_key=True)
    gate_id: str = Field(max_length=32)
    user: str = Field(max_length=64)
    round: int
    sent_at: datetime = _time()


class IngestMessage(SQLModel, table=True):
    """A message the HTTP event API accepted, kept until it is routed or found dead.

    Written before the API answers 200, so an accepted message survives a crash;
    (write key, messageId) makes a retried request a no-op; `stream` (the sender's
    userId or anonymousId) keeps one person's messages in order while routing."""

    __tablename__ = "ingest_queue"
    __table_args__ = (
        UniqueConstraint("write_key", "message_id", name="uq_ingest_write_key_message"),
        Index("ix_ingest_state_stream", "state", "stream"),
    )

    id: int | None = Field(default=None, primary_key=True)
    write_key: str = Field(max_length=32)
    """The write key's name (never the key itself)."""
    message_id: str = Field(max_length=100)
    kind: str = Field(max_length=16)
    stream: str = Field(max_length=320)
    payload: dict[str, Any] = _json()
    state: str = Field(default="pending", max_length=8, index=True)
    """pending, routed, or dead (can never route: `last_error` says why)."""
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    received_at: datetime = _time()
    next_attempt_at: datetime = _time()
    routed_at: datetime | None = _time(nullable=True)
