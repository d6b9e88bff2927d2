"""Contact merges as the client returns and lists them."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel


class MergeMoved(BaseModel):
    """What a merge moved from the merged contact to the survivor."""

    identities: int = 0
    traits: list[str] = []
    """Traits whose value came from the merged contact (it set them more recently)."""
    consent_lines: int = 0
    """Lines appended to the survivor's consent ledger."""
    suppressions: int = 0
    preferences: int = 0
    deliveries: int = 0
    events: int = 0
    inbox_messages: int = 0
    earlier_merges: int = 0
    """Contacts merged into the merged one before, now tombstones of the survivor."""
    journeys_continued: dict[str, str] = {}
    """Workflow id -> journey: entries that continue, addressing the survivor."""
    journeys_ended: dict[str, str] = {}
    """Workflow id -> journey: entries ended because the survivor is in that journey."""


class MergeOutcome(BaseModel):
    """One merge: `merged` is now a tombstone whose key resolves to `survivor`."""

    id: int | None
    """None when nothing was merged: the previous id of an `alias` named the user already."""
    survivor: str
    merged: str
    evidence: str
    merged_at: AwareDatetime
    moved: MergeMoved
    already: bool = False
    """The same merge was made before (a retry): nothing changed this time."""
