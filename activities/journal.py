"""Recording journey entries and exits (run as local activities: cheap and short)."""

from __future__ import annotations

from temporalio import activity

from tidings.activities import metrics
from tidings.db import journey_runs
from tidings.db.engine import Database
from tidings.models.workflow_io import EnterJourneyInput, EnterJourneyResult, ExitJourneyInput


class JourneyJournal:
    def __init__(self, db: Database) -> None:
        self._db = db

    @activity.defn(name="enter_journey")
    def enter_journey(self, input: EnterJourneyInput) -> EnterJourneyResult:
        """Admit the contact under the reentry policy; times are the workflow's clock."""
        with self._db.session() as session:
            admission = journey_runs.admit(
                session=session,
                journey=input.journey,
                version=input.version,
                contact_key=input.contact_key,
                workflow_id=input.workflow_id,
                run_id=input.run_id,
                reentry=input.reentry,
                now=input.now,
            )
        metrics.record_entry(input.journey, admission.admitted)
        return EnterJourneyResult(
            admitted=admission.admitted, entry=admission.entry, reason=admission.reason
        )

    @activity.defn(name="exit_journey")
    def exit_journey(self, input: ExitJourneyInput) -> None:
        with self._db.session() as session:
            journey_runs.record_exit(
                session=session,
                journey=input.journey,
                contact_key=input.contact_key,
                entry=input.entry,
                outcome=input.outcome,
                reason=input.reason,
                now=input.now,
            )
        metrics.record_exit(input.journey, input.outcome)
