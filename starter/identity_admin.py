"""Identity resolution and merges, as the client (and the HTTP API) uses them.

The database work of each call is one transaction; journeys of a merged contact are
told afterwards (`contact_merged` signal), and telling them again changes nothing,
so a merge that failed half-way through signalling is completed by running it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from tidings import naming
from tidings.db import identities
from tidings.db.contacts import add_identity, find_identity
from tidings.db.engine import Database
from tidings.db.merges import merge_contacts, merges_of
from tidings.errors import InputError, TidingsError
from tidings.identities import Identity, check_token, is_reference
from tidings.models.merges import MergeMoved, MergeOutcome
from tidings.models.tables import Contact
from tidings.models.workflow_io import ContactMergedInput

ALIAS_EVIDENCE = "alias: the previous id was used by this user (Segment alias)"
SAME_VISITOR_EVIDENCE = "identified with the anonymous id of an anonymous-only contact"


class IdentityAdmin:
    def __init__(
        self,
        database: Database,
        temporal: Client,
        *,
        default_phone_region: str,
        clock: Callable[[], Awaitable[datetime]],
    ) -> None:
        self.database = database
        self._temporal = temporal
        self._region = default_phone_region or None
        self._clock = clock

    async def resolve(self, ref: str) -> str:
        """The key of the contact a key or `kind:value` reference names."""
        return await self.database.run(lambda session: self.resolve_in(session, ref))

    def resolve_in(self, session: Session, ref: str) -> str:
        return identities.resolve(session=session, ref=ref, default_region=self._region)

    async def contact_for(self, *, user_id: str | None, anonymous_id: str | None) -> str:
        """Segment's rule: `user_id` is the key, `anonymous_id` an anonymous identity.
        Creates a bare contact when neither is known; an anonymous-only contact whose
        id the user now uses is merged into the user's."""
        if user_id is None and anonymous_id is None:
            raise InputError("a call needs a userId or an anonymousId (or both)")
        anonymous = _anonymous(anonymous_id) if anonymous_id is not None else None
        now = await self._clock()

        def work(session: Session) -> tuple[str, MergeOutcome | None]:
            if user_id is None:
                assert anonymous is not None
                owner = find_identity(session=session, identity=anonymous)
                if owner is not None:
                    return owner.contact_key, None
                return identities.create_anonymous(
                    session=session, anonymous_id=anonymous.value, now=now
                ), None
            key = identities.ensure_contact(session=session, key=user_id, now=now)
            if anonymous is None:
                return key, None
            owner = find_identity(session=session, identity=anonymous)
            if owner is None:
                add_identity(session=session, contact_key=key, identity=anonymous, now=now)
            elif owner.contact_key != key and identities.is_anonymous_only(
                session=session, key=owner.contact_key
            ):
                merged = merge_contacts(
                    session=session,
                    survivor=key,
                    merged=owner.contact_key,
                    evidence=SAME_VISITOR_EVIDENCE,
                    now=now,
                )
                return key, merged
            # Otherwise the id stays with the known person it belongs to (a shared
            # browser): the call is about the user, and merging would be a guess.
            return key, None

        key, outcome = await self.database.run(work)
        if outcome is not None:
            await self.tell_journeys(outcome)
        return key

    async def alias(self, previous_id: str, user_id: str) -> MergeOutcome:
        """Segment's alias: the previous id (an anonymous id, or another contact's key)
        is the user's from now on; its contact, if any, is merged into the user's."""
        now = await self._clock()

        def work(session: Session) -> MergeOutcome:
            key = identities.ensure_contact(session=session, key=user_id, now=now)
            previous = self._previous_contact(session, previous_id, now)
            if previous == key:
                return _nothing_merged(key, now)
            return merge_contacts(
                session=session, survivor=key, merged=previous, evidence=ALIAS_EVIDENCE, now=now
            )

        outcome = await self.database.run(work)
        await self.tell_journeys(outcome)
        return outcome

    def _previous_contact(self, session: Session, previous_id: str, now: datetime) -> str:
        """The contact an alias's previous id names: its anonymous identity, else a
        contact key (its own, even if merged since: a retry finds the merge), else a new
        anonymous contact for it (so the alias is a merge like any other)."""
        if not is_reference(previous_id):
            contact = session.get(Contact, previous_id)
            if contact is not None:
                return contact.key
        anonymous = _anonymous(previous_id)
        owner = find_identity(session=session, identity=anonymous)
        if owner is not None:
            return owner.contact_key
        return identities.create_anonymous(session=session, anonymous_id=anonymous.value, now=now)

    async def merge(self, survivor: str, merged: str, *, evidence: str) -> MergeOutcome:
        """Two contacts found to be one person: `merged` moves into `survivor`.

        Both may be references. A retry of a merge already made returns it (`already`)
        and tells its journeys again."""
        now = await self._clock()

        def work(session: Session) -> MergeOutcome:
            keep = self.resolve_in(session, survivor)
            # A key names that contact even once merged, so a retry finds its merge.
            gone = (
                self.resolve_in(session, merged)
                if is_reference(merged)
                else identities.check_key(merged)
            )
            return merge_contacts(
                session=session, survivor=keep, merged=gone, evidence=evidence, now=now
            )

        outcome = await self.database.run(work)
        await self.tell_journeys(outcome)
        return outcome

    async def merges(self, key: str) -> list[MergeOutcome]:
        """The merges recorded for a contact, on either side, oldest first."""
        return await self.database.run(lambda session: merges_of(session=session, key=key))

    async def tell_journeys(self, outcome: MergeOutcome) -> None:
        """Signal the merged contact's running journeys: continue for the survivor, or
        end where the survivor is in the same journey. Journeys that ended meanwhile
        need nothing."""
        moved = outcome.moved
        plan = [(wf, False) for wf in moved.journeys_continued] + [
            (wf, True) for wf in moved.journeys_ended
        ]
        for workflow_id, end in plan:
            handle = self._temporal.get_workflow_handle(workflow_id)
            try:
                await handle.signal(
                    naming.CONTACT_MERGED_SIGNAL,
                    ContactMergedInput(survivor=outcome.survivor, end=end),
                )
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise TidingsError(
                    f"merge {outcome.id} is recorded, but journey {workflow_id} could not be "
                    f"told ({err.message}); run the same merge again to tell it"
                ) from err


def _anonymous(value: str) -> Identity:
    try:
        return Identity("anonymous", check_token(value, "anonymous id"))
    except ValueError as err:
        raise InputError(str(err)) from None


def _nothing_merged(key: str, now: datetime) -> MergeOutcome:
    return MergeOutcome(
        id=None,
        survivor=key,
        merged=key,
        evidence=f"the previous id already names contact {key}",
        merged_at=now,
        moved=MergeMoved(),
        already=True,
    )
