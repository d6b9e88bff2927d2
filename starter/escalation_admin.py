"""Staff's side of escalations: list them, acknowledge one.

Listing reads the database (no Temporal needed). An acknowledgment is the
escalation workflow's `acknowledge` Update, so its validator has the last
word (someone asked, the escalation still open) and a refused one leaves no
trace in the history.
"""

from __future__ import annotations

from pydantic import ValidationError
from sqlmodel import Session
from temporalio.client import Client

from tidings import naming
from tidings.db import escalations
from tidings.db.engine import Database
from tidings.errors import InputError, input_error
from tidings.models.escalations import Acknowledged, Acknowledgment, EscalationRow
from tidings.starter.updates import UpdateRefused, WorkflowClosed, run_update


class AcknowledgmentRefusedError(InputError):
    """The escalation refused the acknowledgment (its validator said why), or it is closed."""


class EscalationAdmin:
    def __init__(self, database: Database, client: Client | None = None) -> None:
        self.database = database
        self._client = client

    async def list(self, *, open_only: bool = False) -> list[EscalationRow]:
        """Escalations with each tier's outcome, newest first."""
        return await self.database.run(
            lambda session: escalations.rows(session=session, open_only=open_only)
        )

    async def show(self, reference: str) -> EscalationRow:
        """One escalation by its number (`12`) or workflow id."""

        def read(session: Session) -> EscalationRow:
            record = escalations.find(session=session, reference=reference)
            if record is None:
                raise InputError(
                    f"no escalation {reference!r}; give its number or workflow id "
                    "(see `tidings escalations list`)"
                )
            return escalations.as_row(session=session, record=record)

        return await self.database.run(read)

    async def acknowledge(self, reference: str, *, user: str, comment: str = "") -> Acknowledged:
        """Acknowledge as `user`: the escalation stops; refused with the reason otherwise."""
        ack = acknowledgment(user, comment)
        row = await self.show(reference)
        if self._client is None:
            raise InputError("acknowledging needs a connection to Temporal")
        try:
            return await run_update(
                self._client, row.workflow_id, naming.ACKNOWLEDGE_UPDATE, ack, Acknowledged
            )
        except UpdateRefused as refused:
            raise AcknowledgmentRefusedError(f"refused: {refused.reason}") from None
        except WorkflowClosed:
            closed = await self.show(reference)
            raise AcknowledgmentRefusedError(
                f"refused: escalation {closed.number} is closed ({_ending(closed)}); "
                "nothing to acknowledge"
            ) from None


def acknowledgment(user: str, comment: str = "") -> Acknowledgment:
    """The Update's argument, or an InputError naming what is wrong with it."""
    try:
        return Acknowledgment(user=user, comment=comment)
    except ValidationError as err:
        raise input_error("acknowledgment", err) from None


def _ending(row: EscalationRow) -> str:
    if row.status == "acknowledged":
        return f"acknowledged by {row.acknowledged_by}"
    if row.status == "resolved":
        return f"resolved by {row.resolved_event}"
    return row.status
