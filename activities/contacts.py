"""Reading the few contact fields a journey step needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tidings.db.contacts import snapshot
from tidings.db.engine import Database
from tidings.db.identities import live_key
from tidings.db.segments import memberships
from tidings.errors import UnknownContactError
from tidings.models.contact import ContactSnapshot
from tidings.models.segment import Segment
from tidings.models.workflow_io import LoadContactInput, PolicyCheckInput, SendInput

UNKNOWN_CONTACT = "UnknownContact"

_Input = TypeVar("_Input", LoadContactInput, PolicyCheckInput, SendInput)


def for_live_contact(session: Session, input: _Input) -> _Input:
    """The step's input for the contact its key now stands for.

    A journey hears of its contact's merge by signal, and a step may run before
    the signal lands: it still names the merged contact, whose addresses,
    consent and caps have moved to the survivor. Reading the tombstone would
    skip the message (no address) or judge it by the wrong ledger."""
    key = live_key(session=session, key=input.contact_key)
    if key == input.contact_key:
        return input
    return input.model_copy(update={"contact_key": key})


class ContactReader:
    def __init__(
        self,
        db: Database,
        *,
        default_timezone: str,
        segments: Mapping[str, Segment] | None = None,
    ) -> None:
        self._db = db
        self._default_timezone = default_timezone
        self._segments = segments or {}

    @activity.defn(name="load_contact")
    def load_contact(self, input: LoadContactInput) -> ContactSnapshot:
        """Time zone, locale and only the named traits (data minimization), and
        membership in the named segments at the workflow's `now`."""
        with self._db.session() as session:
            input = for_live_contact(session, input)
            try:
                found = snapshot(
                    session=session,
                    key=input.contact_key,
                    traits=input.traits,
                    default_timezone=self._default_timezone,
                )
                if not input.segments:
                    return found
                return found.model_copy(update={"segments": self._memberships(session, input)})
            except UnknownContactError as err:
                raise ApplicationError(str(err), type=UNKNOWN_CONTACT, non_retryable=True) from err

    def _memberships(self, session: Session, input: LoadContactInput) -> dict[str, bool]:
        if input.now is None:
            raise ApplicationError(
                "segment membership needs the workflow's `now`", non_retryable=True
            )
        # A journey validated against segments this worker lacks (deployed apart):
        # as with a missing trait, its condition is false; the log says why.
        for name in input.segments:
            if name not in self._segments:
                activity.logger.warning(
                    "segment %r is not defined on this worker; membership taken as false "
                    "(deploy segments/%s.yaml with the worker)",
                    name,
                    name,
                )
        return memberships(
            session=session,
            segments=self._segments,
            names=input.segments,
            contact_key=input.contact_key,
            now=input.now,
        )
