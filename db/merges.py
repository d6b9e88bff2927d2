"""Merging two contacts found to be one person, in one transaction.

What moves to the survivor, and who wins where both have something:

- identities: all move (the survivor's own addresses stay first, so messages keep
  going where they went; push goes to the newest registered token of either);
- traits: per trait, the value set most recently wins; the survivor's on ties;
  time zone, locale and jurisdiction: the survivor's, or the merged one's if it has none;
- consent: the most restrictive wins (see `_carry_consent`); the ledger is append-only,
  so the survivor gets new lines citing the merged contact's, nothing is rewritten;
- suppressions, delivery history, events and inbox messages move; topic preferences
  move, an unsubscribe beating a subscribe;
- journeys: entries stay recorded under the key they started with (their workflow id
  names it); `person_keys` makes them the survivor's. Entries of a journey the survivor
  is also in are ended; the others continue, addressing the survivor. The client
  signals those workflows after this transaction commits.

The audit log gets a record in both contacts' chains. Two contacts with different ids
from the same source system are two customers there: that merge is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from tidings.db.audit_chain import Entry, append
from tidings.db.identities import merged_into, person_keys
from tidings.errors import InputError, UnknownContactError
from tidings.models.merges import MergeMoved, MergeOutcome
from tidings.models.tables import (
    ConsentRecord,
    Contact,
    ContactIdentity,
    ContactMerge,
    Delivery,
    EventRecord,
    InboxMessage,
    JourneyRun,
    PreferenceRecord,
    SuppressionRecord,
)

MAX_EVIDENCE = 500


def merge_contacts(
    *, session: Session, survivor: str, merged: str, evidence: str, now: datetime
) -> MergeOutcome:
    """Merge `merged` into `survivor` (both live keys, or `merged` already merged into
    `survivor`: then the earlier merge is returned, marked `already`)."""
    evidence = evidence.strip()
    if not evidence or len(evidence) > MAX_EVIDENCE:
        raise InputError(
            f"a merge needs its evidence (1-{MAX_EVIDENCE} characters): why these two "
            "contacts are one person, e.g. 'same Stripe customer' or 'support ticket 4411'"
        )
    keep, gone = _lock_both(session, survivor, merged)
    if gone.merged_into is not None:
        earlier = session.exec(select(ContactMerge).where(ContactMerge.merged == gone.key)).one()
        if gone.merged_into == keep.key:
            return _outcome(earlier, already=True)
        raise InputError(
            f"contact {gone.key!r} was merged into {gone.merged_into!r} on "
            f"{earlier.merged_at:%Y-%m-%d}; merge {gone.merged_into!r} instead"
        )
    if keep.merged_into is not None:
        raise InputError(
            f"contact {keep.key!r} was merged into {keep.merged_into!r}; "
            f"merge into {keep.merged_into!r} instead"
        )
    if keep.key == gone.key:
        raise InputError(f"{keep.key!r} and {gone.key!r} are the same contact; nothing to merge")
    _refuse_conflicting_ids(session, keep.key, gone.key)

    survivor_journeys = {run.journey for run in _open_runs(session, keep.key)}
    moved = MergeMoved()
    for run in _open_runs(session, gone.key):
        ends = run.journey in survivor_journeys
        (moved.journeys_ended if ends else moved.journeys_continued)[run.workflow_id] = run.journey
    moved.identities = _move_identities(session, keep.key, gone.key)
    moved.traits = _merge_traits(keep, gone, now)
    moved.consent_lines = _carry_consent(session, keep.key, gone.key, now)
    moved.preferences = _merge_preferences(session, keep.key, gone.key)
    moved.suppressions = _rekey(session, SuppressionRecord, keep.key, gone.key)
    moved.deliveries = _rekey(session, Delivery, keep.key, gone.key)
    moved.events = _rekey(session, EventRecord, keep.key, gone.key)
    moved.inbox_messages = _rekey(session, InboxMessage, keep.key, gone.key)
    tombstones = merged_into(session=session, key=gone.key)
    for key in tombstones:
        tombstone = session.get(Contact, key)
        assert tombstone is not None
        tombstone.merged_into = keep.key
        session.add(tombstone)
    moved.earlier_merges = len(tombstones)

    gone.merged_into = keep.key
    gone.traits, gone.trait_times = {}, {}
    gone.timezone = gone.locale = gone.jurisdiction = None
    gone.updated_at = now
    session.add(gone)
    record = ContactMerge(
        survivor=keep.key,
        merged=gone.key,
        evidence=evidence,
        moved=moved.model_dump(mode="json"),
        merged_at=now,
    )
    session.add(record)
    session.flush()
    _audit(session, record, moved)
    return _outcome(record, already=False)


def merges_of(*, session: Session, key: str) -> list[MergeOutcome]:
    """Every merge the contact took part in, on either side, oldest first."""
    if session.get(Contact, key) is None:
        raise UnknownContactError(key)
    rows = session.exec(
        select(ContactMerge)
        .where(or_(ContactMerge.survivor == key, ContactMerge.merged == key))
        .order_by(col(ContactMerge.merged_at), col(ContactMerge.id))
    ).all()
    return [_outcome(row, already=False) for row in rows]


def _lock_both(session: Session, survivor: str, merged: str) -> tuple[Contact, Contact]:
    """Both rows, locked in key order (so two merges of the same pair cannot deadlock)
    before anything is read from them."""
    rows: dict[str, Contact] = {}
    for key in sorted({survivor, merged}):
        contact = session.get(Contact, key, with_for_update=True)
        if contact is None:
            raise UnknownContactError(key)
        rows[key] = contact
    return rows[survivor], rows[merged]


def _refuse_conflicting_ids(session: Session, survivor: str, merged: str) -> None:
    ids = {
        key: {
            row.source: row.value
            for row in session.exec(
                select(ContactIdentity).where(
                    ContactIdentity.contact_key == key, ContactIdentity.kind == "external"
                )
            )
        }
        for key in (survivor, merged)
    }
    for source, kept in sorted(ids[survivor].items()):
        other = ids[merged].get(source)
        if other is not None and other != kept:
            raise InputError(
                f"refusing to merge {merged!r} into {survivor!r}: they have different "
                f"{source} ids ({other!r} and {kept!r}), so {source} knows them as two "
                f"customers. If they are one person, merge them in {source} first and "
                "correct the id here"
            )


def _open_runs(session: Session, key: str) -> list[JourneyRun]:
    return list(
        session.exec(
            select(JourneyRun).where(
                col(JourneyRun.contact_key).in_(person_keys(session=session, key=key)),
                col(JourneyRun.exited_at).is_(None),
            )
        ).all()
    )


def _move_identities(session: Session, survivor: str, merged: str) -> int:
    """Moved rows are added again so the survivor's own come first (a channel delivers
    to the first-added email or phone); push tokens of both are re-added oldest first,
    since push goes to the newest one."""
    rows = session.exec(
        select(ContactIdentity)
        .where(col(ContactIdentity.contact_key).in_([survivor, merged]))
        .order_by(col(ContactIdentity.created_at), col(ContactIdentity.id))
    ).all()
    again = [r for r in rows if r.contact_key == merged or r.kind == "push"]
    copies = [
        ContactIdentity(
            contact_key=survivor,
            kind=r.kind,
            source=r.source,
            value=r.value,
            created_at=r.created_at,
        )
        for r in again
    ]
    for row in again:
        session.delete(row)
    session.flush()
    session.add_all(copies)
    session.flush()
    return sum(1 for r in rows if r.contact_key == merged)


def _merge_traits(survivor: Contact, merged: Contact, now: datetime) -> list[str]:
    """Per trait, the value set most recently (trait times, else the contact's last
    update) wins; the survivor's on ties. Returns the traits taken from `merged`."""
    traits, times = dict(survivor.traits), dict(survivor.trait_times)
    taken = []
    for name, value in merged.traits.items():
        theirs = merged.trait_times.get(name) or merged.updated_at.isoformat()
        if name in traits:
            ours = times.get(name) or survivor.updated_at.isoformat()
            if datetime.fromisoformat(theirs) <= datetime.fromisoformat(ours):
                continue
        traits[name], times[name] = value, theirs
        taken.append(name)
    survivor.traits, survivor.trait_times = traits, times
    survivor.timezone = survivor.timezone or merged.timezone
    survivor.locale = survivor.locale or merged.locale
    survivor.jurisdiction = survivor.jurisdiction or merged.jurisdiction
    survivor.anonymous = survivor.anonymous and merged.anonymous
    survivor.updated_at = now
    return sorted(taken)


def _covers(line: ConsentRecord, channel: str, purpose: str | None, topic: str | None) -> bool:
    """Whether a ledger line speaks for that scope (None: every purpose or topic)."""
    return (
        line.channel == channel and line.purpose in (None, purpose) and line.topic in (None, topic)
    )


def _newest(lines: Iterable[ConsentRecord]) -> ConsentRecord | None:
    return max(lines, key=lambda line: (line.effective_at, line.id or 0), default=None)


def _carry_consent(session: Session, survivor: str, merged: str, now: datetime) -> int:
    """Most restrictive wins, written as new lines on the survivor's ledger:

    - the merged contact's revocations and objections are copied as they were (an
      objection to marketing stays absolute);
    - its grants are copied with their own effective and expiry times (a consent's
      age is what limits it), except where the survivor's own newest line for that
      scope is a revocation or objection;
    - a survivor's grant made after a revocation of the merged contact's that was
      still in force is revoked, effective at the merge: the later grant was given
      by the same person who had said no, but as someone else.
    """

    def ledger(key: str) -> list[ConsentRecord]:
        return list(
            session.exec(
                select(ConsentRecord)
                .where(ConsentRecord.contact_key == key)
                .order_by(col(ConsentRecord.effective_at), col(ConsentRecord.id))
            ).all()
        )

    ours, theirs = ledger(survivor), ledger(merged)
    added: list[ConsentRecord] = []
    for line in theirs:
        if line.action == "grant":
            newest = _newest(
                other for other in ours if _covers(other, line.channel, line.purpose, line.topic)
            )
            if newest is not None and newest.action != "grant":
                continue
        added.append(_copy(line, survivor, merged, effective_at=line.effective_at, now=now))
    for cut in theirs:
        if cut.action == "grant":
            continue
        newest = _newest(
            other for other in theirs if _covers(other, cut.channel, cut.purpose, cut.topic)
        )
        if newest is not cut:
            continue  # the merged contact granted that scope again afterwards
        for grant in ours:
            purpose = grant.purpose if cut.action == "revoke" else "marketing"
            if (
                grant.action == "grant"
                and grant.effective_at > cut.effective_at
                and _covers(cut, grant.channel, purpose, grant.topic)
                and (cut.action == "revoke" or grant.purpose in (None, "marketing"))
            ):
                revoke = _copy(cut, survivor, merged, effective_at=now, now=now)
                revoke.action, revoke.purpose, revoke.topic = "revoke", purpose, grant.topic
                revoke.proof = {**revoke.proof, "cuts_ledger_id": grant.id}
                added.append(revoke)
    session.add_all(added)
    session.flush()
    return len(added)


def _copy(
    line: ConsentRecord, survivor: str, merged: str, *, effective_at: datetime, now: datetime
) -> ConsentRecord:
    return ConsentRecord(
        contact_key=survivor,
        channel=line.channel,
        purpose=line.purpose,
        topic=line.topic,
        action=line.action,
        basis=line.basis,
        source=f"merge:{merged}",
        proof={
            "merged_from": merged,
            "ledger_id": line.id,
            "source": line.source,
            "effective_at": line.effective_at.isoformat(),
            "proof": line.proof,
        },
        recorded_at=now,
        effective_at=effective_at,
        expires_at=line.expires_at,
    )


def _merge_preferences(session: Session, survivor: str, merged: str) -> int:
    """Topic choices move; where both chose, unsubscribed wins (the restrictive one)."""
    theirs = session.exec(
        select(PreferenceRecord).where(PreferenceRecord.contact_key == merged)
    ).all()
    for pref in theirs:
        ours = session.get(PreferenceRecord, (survivor, pref.channel, pref.topic))
        if ours is None:
            ours = PreferenceRecord(
                contact_key=survivor,
                channel=pref.channel,
                topic=pref.topic,
                subscribed=pref.subscribed,
                updated_at=pref.updated_at,
            )
        elif ours.subscribed and not pref.subscribed:
            ours.subscribed, ours.updated_at = False, pref.updated_at
        session.delete(pref)
        session.flush()
        session.add(ours)
    session.flush()
    return len(theirs)


def _rekey(session: Session, table: Any, survivor: str, merged: str) -> int:
    """Rows of the merged contact become the survivor's (the same rows: history)."""
    result = session.execute(
        update(table).where(table.contact_key == merged).values(contact_key=survivor)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _audit(session: Session, record: ContactMerge, moved: MergeMoved) -> None:
    """One record in each contact's chain. The evidence is free text that may name the
    person: the log keeps its digest (the merge row keeps the text)."""
    digest = hashlib.sha256(record.evidence.encode()).hexdigest()
    data = {
        "merge_id": record.id,
        "survivor": record.survivor,
        "merged": record.merged,
        "evidence_sha256": digest,
        "moved": _counts(moved),
        "journeys_continued": sorted(moved.journeys_continued.values()),
        "journeys_ended": sorted(moved.journeys_ended.values()),
    }
    rule = f"merge {record.merged} into {record.survivor}"
    for key, action in ((record.survivor, "absorbed"), (record.merged, "merged")):
        append(
            session,
            Entry(
                at=record.merged_at,
                contact_key=key,
                kind="contact",
                action=action,
                rule=rule,
                detail=f"merge {record.id}",
                data=data,
            ),
        )


def _counts(moved: MergeMoved) -> dict[str, int]:
    return {
        name: value
        for name, value in moved.model_dump().items()
        if isinstance(value, int) and value
    }


def _outcome(record: ContactMerge, *, already: bool) -> MergeOutcome:
    assert record.id is not None
    return MergeOutcome(
        id=record.id,
        survivor=record.survivor,
        merged=record.merged,
        evidence=record.evidence,
        merged_at=record.merged_at,
        moved=MergeMoved.model_validate(record.moved),
        already=already,
    )
