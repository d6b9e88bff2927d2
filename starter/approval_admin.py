"""Approvers' side of approval gates: list, read, decide.

Listing and reading use the database (no Temporal needed); a decision is a
workflow Update on the journey holding the gate, so the workflow's validator
has the last word (role, one vote per person, open gate, deadline) and a
refused decision leaves no trace in the history.
"""

from __future__ import annotations

from sqlmodel import Session
from temporalio.client import Client

from tidings import naming
from tidings.db import approvals
from tidings.db.engine import Database
from tidings.directory import Directory
from tidings.errors import InputError
from tidings.models.approvals import ApprovalDecision, GateRow, GateView, Verdict
from tidings.starter.updates import UpdateRefused, WorkflowClosed, run_update


class DecisionRefusedError(InputError):
    """The gate's workflow refused the decision (its validator said why)."""


class ApprovalAdmin:
    def __init__(self, database: Database, directory: Directory, client: Client | None) -> None:
        self.database = database
        self.directory = directory
        self._client = client

    async def list(
        self, *, role: str | None = None, user: str | None = None, status: str | None = "open"
    ) -> list[GateRow]:
        """Gates, soonest deadline first: those waiting on `role`, or on any of `user`'s."""
        roles = [role] if role else None
        if user is not None:
            held = self.directory.user(user).roles
            roles = [r for r in held if role is None or r == role]

        def read(session: Session) -> list[GateRow]:
            return approvals.listing(session=session, status=status, roles=roles)

        return await self.database.run(read)

    async def show(self, gate_id: str) -> GateRow:
        return await self.database.run(
            lambda session: approvals.get(session=session, gate_id=gate_id)
        )

    async def decide(
        self,
        gate_id: str,
        *,
        user: str,
        verdict: Verdict,
        comment: str = "",
        role: str | None = None,
    ) -> GateView:
        self.directory.user(user)  # an unknown login is refused here, with the fix
        gate = await self.show(gate_id)
        if self._client is None:
            raise InputError("deciding needs a connection to Temporal")
        decision = ApprovalDecision(
            gate_id=gate_id, user=user, verdict=verdict, comment=comment, role=role
        )
        try:
            return await run_update(
                self._client, gate.workflow_id, naming.DECIDE_UPDATE, decision, GateView
            )
        except UpdateRefused as refused:
            raise DecisionRefusedError(f"refused: {refused.reason}") from None
        except WorkflowClosed:
            raise DecisionRefusedError(
                f"refused: the workflow holding gate {gate_id} has ended; the gate is closed"
            ) from None
