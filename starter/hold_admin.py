"""Legal holds, pauses and kill switches for operators: set, lift, list.

A hold is a database row the contact policy reads before every send, so
setting one needs no Temporal call: journeys stop at their next send (a
`kill` ends them there). Held journeys show `WaitingFor="policy:hold"` and
check again every `HOLD_RECHECK`; lifting a hold also wakes them at once with
one server-side batch operation that sends each the `recheck` signal. If that
call fails the lift still stands, and held journeys resume at their next check.

    holds = HoldAdmin(database, temporal=client)
    change = await holds.set("journey:onboarding", reason="Legal review 42", by="ann")
    await holds.lift(change.hold.id, by="ann", reason="cleared")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from tidings.connection import signal_waiting
from tidings.db import holds
from tidings.db.engine import Database
from tidings.errors import InputError, TidingsError
from tidings.models.holds import Hold, HoldAction, parse_scope
from tidings.models.primitives import UserName, format_duration
from tidings.policy.holds import HOLD_RECHECK

HELD = "policy:hold"
"""The WaitingFor search attribute of a journey a hold keeps at its send."""
MAX_REASON = 500

_USER: TypeAdapter[str] = TypeAdapter(UserName)


class HoldChange(BaseModel):
    """A hold as set or lifted, and whether held journeys were woken to check again."""

    hold: Hold
    batch_job_id: str | None = None
    """The batch operation that sent held journeys the recheck signal (a lift, a kill)."""
    warning: str | None = None
    """Why held journeys could not be woken at once (they check again on their own)."""


class HoldAdmin:
    """Set, lift and list holds. `temporal` (a client, or a function connecting one
    when first needed) wakes held journeys on a lift; without it they resume at
    their next check. `journeys` and `templates`, when given, are the names a
    scope may use (a typo would otherwise hold nothing)."""

    def __init__(
        self,
        database: Database,
        *,
        temporal: Client | Callable[[], Awaitable[Client]] | None = None,
        journeys: Collection[str] | None = None,
        templates: Collection[str] | None = None,
    ) -> None:
        self.database = database
        self._temporal = temporal
        self._journeys = journeys
        self._templates = templates

    async def set(
        self, scope: str, *, reason: str, by: str, action: HoldAction = "hold"
    ) -> HoldChange:
        """Hold (or, with `action="kill"`, end) every journey the scope covers at its
        next send. A kill also wakes journeys already held, so they end now."""
        normalized = self.check_scope(scope)
        actor = _user(by)
        why = _reason(reason, "--reason", required=True)
        if action not in ("hold", "kill"):
            raise InputError(f"a hold's action is hold or kill, not {action!r}")
        hold = await self.database.run(
            lambda session: holds.set_hold(
                session=session,
                scope=normalized,
                action=action,
                reason=why,
                set_by=actor,
                now=_now(),
            )
        )
        if action == "hold":
            return HoldChange(hold=hold)
        return await self._wake(hold, f"kill switch {hold.id} set by {actor}: {why}")

    async def lift(self, hold_id: int, *, by: str, reason: str | None = None) -> HoldChange:
        """Lift a hold; journeys it held send where they stopped (woken at once when
        Temporal takes the batch signal, else within HOLD_RECHECK)."""
        actor = _user(by)
        why = _reason(reason, "--reason", required=False) if reason else None
        hold = await self.database.run(
            lambda session: holds.lift_hold(
                session=session, hold_id=hold_id, lifted_by=actor, reason=why, now=_now()
            )
        )
        return await self._wake(hold, f"hold {hold.id} lifted by {actor}: {why or 'no reason'}")

    async def list(self, *, include_lifted: bool = False) -> list[Hold]:
        """Active holds, or with `include_lifted` every hold ever set (oldest first)."""
        return await self.database.run(
            lambda session: holds.list_holds(session=session, include_lifted=include_lifted)
        )

    async def get(self, hold_id: int) -> Hold:
        found = await self.database.run(
            lambda session: holds.get_hold(session=session, hold_id=hold_id)
        )
        if found is None:
            raise InputError(f"there is no hold {hold_id}; `tidings hold list --all` shows all")
        return found

    def check_scope(self, scope: str) -> str:
        """The scope normalized (`journey:onboarding`), or InputError naming the forms."""
        try:
            kind, name = parse_scope(scope)
        except ValueError as err:
            raise InputError(f"invalid hold scope: {err}") from None
        known = {"journey": self._journeys, "template": self._templates}.get(kind)
        if known is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise InputError(
                f"invalid hold scope {scope!r}: there is no {kind} {name!r} ({listed})"
            )
        return "all" if kind == "all" else f"{kind}:{name}"

    async def _wake(self, hold: Hold, reason: str) -> HoldChange:
        """Send every held journey the recheck signal, in one server-side batch operation
        (`WaitingFor="policy:hold" AND ExecutionStatus="Running"`)."""
        try:
            client = await self._client()
            job_id = await signal_waiting(client, HELD, reason=reason)
        except (RPCError, RuntimeError, TidingsError) as err:
            wait = format_duration(HOLD_RECHECK)
            what = "lifted" if hold.lifted_at is not None else "set"
            return HoldChange(
                hold=hold,
                warning=f"{hold.label()} is {what}, but held journeys could not be woken at "
                f"once ({err}); each checks again on its own within {wait}",
            )
        return HoldChange(hold=hold, batch_job_id=job_id)

    async def _client(self) -> Client:
        if self._temporal is None:
            raise TidingsError("no Temporal client")
        if not isinstance(self._temporal, Client):
            self._temporal = await self._temporal()
        return self._temporal


def _user(by: str) -> str:
    try:
        return _USER.validate_python(by)
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(f"--as: {reason}") from None


def _reason(text: str | None, option: str, *, required: bool) -> str:
    cleaned = (text or "").strip()
    if required and not cleaned:
        raise InputError(f"{option}: say why (it goes in the audit log and the held journeys)")
    if len(cleaned) > MAX_REASON:
        raise InputError(f"{option}: at most {MAX_REASON} characters ({len(cleaned)} given)")
    return cleaned


def _now() -> datetime:
    return datetime.now(UTC)
