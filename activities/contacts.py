"""Reading the few contact fields a journey step needs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tidings.db.contacts import snapshot
from tidings.db.engine import Database
from tidings.errors import UnknownContactError
from tidings.models.contact import ContactSnapshot
from tidings.models.workflow_io import LoadContactInput

UNKNOWN_CONTACT = "UnknownContact"


class ContactReader:
    def __init__(self, db: Database, *, default_timezone: str) -> None:
        self._db = db
        self._default_timezone = default_timezone

    @activity.defn(name="load_contact")
    def load_contact(self, input: LoadContactInput) -> ContactSnapshot:
        """Time zone, locale and only the named traits (data minimization)."""
        with self._db.session() as session:
            try:
                return snapshot(
                    session=session,
                    key=input.contact_key,
                    traits=input.traits,
                    default_timezone=self._default_timezone,
                )
            except UnknownContactError as err:
                raise ApplicationError(str(err), type=UNKNOWN_CONTACT, non_retryable=True) from err
