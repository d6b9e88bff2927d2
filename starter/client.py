"""The typed Python client backends use: `identify`, `track`, `status`.

    client = await TidingsClient.connect()
    await client.identify("cus_42", emails=["ada@example.com"], timezone="Europe/London")
    await client.track("cus_42", "signed_up", {"plan": "pro"}, event_id="evt_1")

Every call validates its input completely before anything is written, so a
refused call leaves no trace; `track` with an event id already routed is a
no-op that says so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, JsonValue, ValidationError
from sqlmodel import Session
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from tidings import naming
from tidings.catalog import Catalog
from tidings.connection import connect
from tidings.db import contacts, events, identities, journey_runs
from tidings.db.engine import Database
from tidings.directory import load_directory
from tidings.errors import input_error
from tidings.identities import is_reference
from tidings.models.contact import ContactView, IdentifyContact, phone_context
from tidings.models.events import JourneyEvent, TrackEvent
from tidings.models.journey import Journey
from tidings.models.merges import MergeOutcome
from tidings.models.primitives import format_duration
from tidings.models.workflow_io import JourneyInput, JourneyStatus
from tidings.settings import Settings
from tidings.starter.approval_admin import ApprovalAdmin
from tidings.starter.escalation_admin import EscalationAdmin
from tidings.starter.hold_admin import HoldAdmin
from tidings.starter.identity_admin import IdentityAdmin
from tidings.starter.policy_admin import PolicyAdmin
from tidings.starter.routing import (
    RoutePlan,
    check_properties,
    needs_contact,
    plan_routes,
    trigger_contact,
)
from tidings.telemetry import tracer
from tidings.workflows.journey import JourneyWorkflow

T = TypeVar("T")


class TrackResult(BaseModel):
    event_id: str
    duplicate: bool = False
    triggered: list[str] = []
    """Journeys the event was delivered to as their trigger (entering if not running)."""
    woke: list[str] = []
    """Running journeys that listen to the event and received it."""
    skipped: dict[str, str] = {}


class ContactJourney(BaseModel):
    """One journey a contact is in, as `status` reports it."""

    journey: str
    workflow_id: str
    state: str
    """`running`, or how the workflow ended when the database still lists it as running."""
    status: JourneyStatus | None = None
    """The journey's own account of its step and what it waits for, while it runs."""


@dataclass(frozen=True)
class _Recorded:
    recorded: events.Recorded
    plan: RoutePlan
    refusals: dict[str, str | None]
    contact_key: str
    """The live contact (a merged contact's key gives the survivor's)."""
    adopted: dict[str, str]
    """Journey -> workflow id of entries started for contacts merged into this one."""


class TidingsClient:
    def __init__(
        self,
        *,
        temporal: Client,
        database: Database,
        catalog: Catalog,
        settings: Settings,
        clock: Callable[[], Awaitable[datetime]] | None = None,
    ) -> None:
        """`clock` replaces the wall clock (tests pass a time-skipping server's clock)."""
        self.temporal = temporal
        self.database = database
        self.catalog = catalog
        self.settings = settings
        self.policy = PolicyAdmin(database, sms_help_text=catalog.policy.sms_help_text)
        """Consent, suppressions, preferences, blackouts, inbound SMS, explain."""
        self.approvals = ApprovalAdmin(
            database, load_directory(settings.directory_file), client=temporal
        )
        """Approval gates: list, show, approve, reject, request changes."""
        self.escalations = EscalationAdmin(database, temporal)
        """Escalations: list, show, acknowledge."""
        self.holds = HoldAdmin(
            database,
            temporal=temporal,
            journeys=set(catalog.journeys),
            templates=set(catalog.templates),
        )
        """Legal holds, pauses and kill switches: set, lift, list."""
        self._clock = clock or _wall_clock
        self.identities = IdentityAdmin(
            database,
            temporal,
            default_phone_region=settings.default_phone_region,
            clock=self._clock,
        )
        """Contact references, anonymous contacts, aliases and merges."""

    @classmethod
    async def connect(
        cls, settings: Settings | None = None, *, temporal: Client | None = None
    ) -> TidingsClient:
        """Connect with settings from the environment (and Temporal's envconfig)."""
        settings = settings or Settings()
        catalog = Catalog.from_settings(settings)
        database = await asyncio.to_thread(Database.for_settings, settings)
        return cls(
            temporal=temporal or await connect(settings),
            database=database,
            catalog=catalog,
            settings=settings,
        )

    def close(self) -> None:
        self.database.dispose()

    async def identify(
        self,
        key: str,
        *,
        emails: Sequence[str] = (),
        phones: Sequence[str] = (),
        push_tokens: Sequence[str] = (),
        devices: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        external_ids: dict[str, str] | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        jurisdiction: str | None = None,
        traits: dict[str, JsonValue] | None = None,
    ) -> ContactView:
        """Create or update a contact; traits merge, a trait set to None is removed.

        `jurisdiction` (US-FL, CA-ON, DE) selects the law the contact policy applies.
        `external_ids` are ids in source systems, by system: {"stripe": "cus_42"}.
        """
        try:
            data = IdentifyContact.model_validate(
                {
                    "key": key,
                    "emails": list(emails),
                    "phones": list(phones),
                    "push_tokens": list(push_tokens),
                    "devices": list(devices),
                    "anonymous_ids": list(anonymous_ids),
                    "external_ids": external_ids or {},
                    "timezone": timezone,
                    "locale": locale,
                    "jurisdiction": jurisdiction,
                    "traits": traits or {},
                },
                context=phone_context(self.settings.default_phone_region),
            )
        except ValidationError as err:
            raise input_error("contact", err) from None
        return await self._in_session(
            lambda session: contacts.upsert_contact(session=session, data=data, now=_now())
        )

    async def resolve(self, ref: str) -> str:
        """The key of the contact a reference names: a key (a merged contact's gives the
        survivor's) or `kind:value`, e.g. `email:ada@example.com`, `phone:+447700900123`,
        `device:ID`, `push:TOKEN`, `anonymous:ID`, `external:stripe:cus_42`.
        UnknownContactError when nobody has it."""
        return await self.identities.resolve(ref)

    async def contact_for(self, *, user_id: str | None, anonymous_id: str | None) -> str:
        """The contact a Segment call names (userId, anonymousId), created bare if new."""
        return await self.identities.contact_for(user_id=user_id, anonymous_id=anonymous_id)

    async def alias(self, previous_id: str, user_id: str) -> MergeOutcome:
        """Segment's alias: the previous id (anonymous id or key) becomes the user's."""
        return await self.identities.alias(previous_id, user_id)

    async def merge(self, survivor: str, merged: str, *, evidence: str) -> MergeOutcome:
        """Two contacts are one person: `merged` moves into `survivor` (see db/merges.py)."""
        return await self.identities.merge(survivor, merged, evidence=evidence)

    async def merges(self, key: str) -> list[MergeOutcome]:
        """The merges recorded for a contact, on either side."""
        return await self.identities.merges(key)

    async def track(
        self,
        key: str,
        event: str,
        properties: dict[str, JsonValue] | None = None,
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> TrackResult:
        """Record an event and route it to the journeys it starts or wakes."""
        # The trace an operator follows from here to the provider call: the
        # starts and signals below carry it into the journeys' workflows.
        with tracer(__name__).start_as_current_span(
            "tidings.track", attributes={"tidings.event": event}
        ):
            return await self._track(
                key, event, properties, event_id=event_id, occurred_at=occurred_at
            )

    async def _track(
        self,
        key: str,
        event: str,
        properties: dict[str, JsonValue] | None,
        *,
        event_id: str | None,
        occurred_at: datetime | None,
    ) -> TrackResult:
        if is_reference(key):
            key = await self.identities.resolve(key)
        try:
            tracked = TrackEvent(
                contact_key=key,
                name=event,
                properties=properties or {},
                event_id=event_id,
                occurred_at=occurred_at,
            )
        except ValidationError as err:
            raise input_error("event", err) from None
        check_properties(self.catalog, tracked.name, tracked.properties)
        now = await self._clock()
        incoming = JourneyEvent(
            event_id=tracked.event_id or uuid.uuid4().hex,
            name=tracked.name,
            properties=tracked.properties,
            occurred_at=tracked.occurred_at or now,
        )

        def record(session: Session) -> _Recorded:
            live = identities.live_contact(session=session, key=key).key
            contact = contacts.get_contact(session=session, key=live)
            # Routing is decided before the event is stored: a condition that
            # fails on this event refuses it with nothing written.
            wanted = needs_contact(self.catalog, incoming.name)
            values = (
                trigger_contact(
                    session=session,
                    catalog=self.catalog,
                    contact=contact,
                    event=incoming.name,
                    now=now,
                )
                if wanted
                else None
            )
            plan = plan_routes(self.catalog, incoming, values)
            recorded = events.record_event(
                session=session, contact_key=live, event=incoming, now=now
            )
            # Reentry is checked here too, in the same transaction; it only saves
            # starting workflows that would refuse the entry in their own clock.
            refusals = {
                journey.name: journey_runs.reentry_refusal(
                    previous=journey_runs.latest_of_person(
                        session=session, journey=journey.name, contact_key=live
                    ),
                    reentry=journey.reentry,
                    now=now,
                )
                for journey in self.catalog.triggered_by(incoming.name)
            }
            adopted = identities.adopted_journeys(session=session, key=live)
            return _Recorded(recorded, plan, refusals, live, adopted)

        stored = await self._in_session(record)
        key = stored.contact_key
        recorded = stored.recorded
        result = TrackResult(event_id=recorded.event.event_id)
        if recorded.already_routed:
            result.duplicate = True
            return result
        plan = stored.plan
        result.skipped.update(plan.skipped)
        for journey in plan.trigger:
            adopted = stored.adopted.get(journey.name)
            if adopted and await self._signal_adopted(journey, key, adopted, recorded.event):
                result.triggered.append(journey.name)
                continue
            refusal = stored.refusals.get(journey.name)
            if refusal is not None and not await self._is_running(journey, key):
                result.skipped[journey.name] = refusal
                continue
            await self._signal_with_start(journey, key, recorded.event)
            result.triggered.append(journey.name)
        for journey in plan.wake:
            adopted = stored.adopted.get(journey.name)
            if await self._signal(journey, key, recorded.event) or (
                adopted and await self._signal_workflow(adopted, recorded.event)
            ):
                result.woke.append(journey.name)
        await self._in_session(
            lambda session: events.mark_routed(
                session=session, event_id=recorded.event.event_id, now=now
            )
        )
        return result

    async def status(self, key: str) -> list[ContactJourney]:
        """The journeys the contact is in, with each one's step and what it waits for;
        `key` may be any reference. Entries of contacts merged into it are its own."""
        key = await self.identities.resolve(key)
        runs = await self._in_session(
            lambda session: [
                run
                for person in identities.person_keys(session=session, key=key)
                for run in journey_runs.active_runs(session=session, contact_key=person)
            ]
        )
        # Each journey's workflow id is known, so asking Temporal directly needs no
        # visibility scan; entries the database lists cover journeys since removed.
        candidates = {naming.journey_workflow_id(name, key): name for name in self.catalog.journeys}
        listed = {run.workflow_id for run in runs}
        candidates.update({run.workflow_id: run.journey for run in runs})
        found = []
        for workflow_id, journey in candidates.items():
            view = await self._describe(journey, workflow_id, listed=workflow_id in listed)
            if view is not None:
                found.append(view)
        return sorted(found, key=lambda v: v.journey)

    async def _describe(
        self, journey: str, workflow_id: str, *, listed: bool
    ) -> ContactJourney | None:
        """The journey's live status, or how it ended if the database thinks it runs."""
        handle = self.temporal.get_workflow_handle(workflow_id)
        view = ContactJourney(journey=journey, workflow_id=workflow_id, state="running")
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return (
                    view.model_copy(update={"state": "not found in Temporal"}) if listed else None
                )
            return view.model_copy(update={"state": f"unknown ({err.message})"})
        if description.status != WorkflowExecutionStatus.RUNNING:
            ended = description.status.name.lower() if description.status else "closed"
            return view.model_copy(update={"state": ended}) if listed else None
        try:
            view.status = await handle.query(naming.STATUS_QUERY, result_type=JourneyStatus)
        except (RPCError, WorkflowQueryFailedError) as err:
            view.state = f"running, not answering queries ({err})"
        return view

    async def _signal_with_start(self, journey: Journey, key: str, event: JourneyEvent) -> None:
        await self.temporal.start_workflow(
            JourneyWorkflow.run,
            JourneyInput(
                journey=journey,
                contact_key=key,
                trigger=event,
                history_event_limit=self.settings.history_event_limit,
            ),
            id=naming.journey_workflow_id(journey.name, key),
            task_queue=naming.JOURNEY_TASK_QUEUE,
            start_signal=naming.EVENT_SIGNAL,
            start_signal_args=[event],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(naming.CONTACT_KEY, key),
                    SearchAttributePair(naming.JOURNEY, journey.name),
                    SearchAttributePair(naming.JOURNEY_VERSION, journey.version),
                ]
            ),
            static_summary=f"{journey.name} v{journey.version}",
            static_details=_outline(journey),
        )

    async def _signal(self, journey: Journey, key: str, event: JourneyEvent) -> bool:
        """Signal the running entry; False when none runs."""
        return await self._signal_workflow(naming.journey_workflow_id(journey.name, key), event)

    async def _signal_adopted(
        self, journey: Journey, key: str, workflow_id: str, event: JourneyEvent
    ) -> bool:
        """Give a trigger to the entry a merged contact started (it continues for this
        one) unless this contact's own entry runs; False when neither takes it."""
        if await self._is_running(journey, key):
            return False
        return await self._signal_workflow(workflow_id, event)

    async def _signal_workflow(self, workflow_id: str, event: JourneyEvent) -> bool:
        handle = self.temporal.get_workflow_handle(workflow_id)
        try:
            await handle.signal(naming.EVENT_SIGNAL, event)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _is_running(self, journey: Journey, key: str) -> bool:
        handle = self.temporal.get_workflow_handle(naming.journey_workflow_id(journey.name, key))
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    async def _in_session(self, work: Callable[[Session], T]) -> T:
        return await self.database.run(work)


def _outline(journey: Journey) -> str:
    """The journey's shape for the UI's static details (names only, no personal data)."""
    lines = [journey.description.strip() or journey.name, "", f"Trigger: `{journey.trigger.event}`"]
    if journey.exit_on:
        lines.append(f"Exits on: {', '.join(f'`{e}`' for e in journey.exit_on)}")
    if journey.goal:
        goal = journey.goal
        lines.append(f"Goal: `{goal.event}` within {format_duration(goal.within)}")
    lines.append("")
    lines += [f"{i}. `{step.id}` ({step.kind})" for i, step in enumerate(journey.steps, 1)]
    return "\n".join(lines)


def _now() -> datetime:
    return datetime.now(UTC)


async def _wall_clock() -> datetime:
    return _now()
