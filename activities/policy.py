"""The workflow's policy check before it schedules a send (run as a local activity)."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tidings.activities import metrics
from tidings.activities.contacts import UNKNOWN_CONTACT, for_live_contact
from tidings.db import audit, deliveries
from tidings.db.engine import Database
from tidings.db.policy_facts import load_facts
from tidings.errors import UnknownContactError
from tidings.models.policy import Decision, Message, PolicyConfig
from tidings.models.workflow_io import PolicyCheckInput
from tidings.policy.engine import decide


class PolicyGate:
    def __init__(self, db: Database, config: PolicyConfig, *, default_timezone: str) -> None:
        self._db = db
        self._config = config
        self._default_timezone = default_timezone

    @activity.defn(name="check_policy")
    def check_policy(self, input: PolicyCheckInput) -> Decision:
        """Decide in the workflow's clock; the decision lands in the audit log, and a
        skip (or a kill switch's end) is recorded as the send's delivery, so every
        planned message has a row."""
        message = Message(
            channel=input.channel,
            purpose=input.purpose,
            topic=input.topic,
            windows=input.windows,
            journey=input.journey,
            template=input.template,
        )
        with self._db.session() as session:
            input = for_live_contact(session, input)
            try:
                facts = load_facts(
                    session=session,
                    contact_key=input.contact_key,
                    message=message,
                    now=input.now,
                    config=self._config,
                    default_timezone=self._default_timezone,
                    waiting_since=input.waiting_since,
                    idempotency_key=input.idempotency_key,
                )
            except UnknownContactError as err:
                raise ApplicationError(str(err), type=UNKNOWN_CONTACT, non_retryable=True) from err
            decision = decide(facts)
            metrics.record_decision("plan", decision.action, decision.kind, input.channel)
            if decision.action in ("skip", "end"):
                deliveries.record(
                    session=session,
                    new=deliveries.NewDelivery(
                        idempotency_key=input.idempotency_key,
                        contact_key=input.contact_key,
                        journey=input.journey,
                        step_id=input.step_id,
                        channel=input.channel,
                        template=input.template,
                        purpose=input.purpose,
                        topic=input.topic,
                        scheduled_at=input.now,
                    ),
                    status=deliveries.SKIPPED,
                    error=decision.reason,
                    now=input.now,
                )
            audit.record_decision(
                session=session,
                contact_key=input.contact_key,
                decision=decision,
                at=input.now,
                stage="planned",
                journey=input.journey,
                step_id=input.step_id,
            )
        return decision
