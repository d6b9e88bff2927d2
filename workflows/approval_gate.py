"""The rules of an approval gate: who may decide, and what the votes add up to.

Pure functions of the gate's state, the decision and the time: the journey
workflow runs them in its Update validator (a refused decision never enters
the history) and handler, and tests call them directly.
"""

from __future__ import annotations

from datetime import datetime

from tidings.models.approvals import ApprovalDecision, GateState, GateStatus, GateView, Vote


def approvals(gate: GateState, role: str) -> int:
    return sum(1 for v in gate.votes if v.role == role and v.verdict == "approve")


def pending_roles(gate: GateState) -> list[str]:
    """Roles still short of their quorum; with `sequential`, only the first of them
    may decide now."""
    short = [role for role in gate.roles if approvals(gate, role) < gate.quorum]
    return short[:1] if gate.order == "sequential" else short


def refusal(gate: GateState, decision: ApprovalDecision, now: datetime) -> str | None:
    """Why this decision cannot be taken, in words for the approver; None if it can."""
    if decision.gate_id != gate.gate_id:
        return (
            f"gate {decision.gate_id} is not the one open on this journey (that is "
            f"{gate.gate_id}); list open gates with `tidings approvals list`"
        )
    if gate.status != "open":
        return f"gate {gate.gate_id} is closed ({gate.status}); nothing more can be decided"
    if now >= gate.deadline:
        return f"gate {gate.gate_id} passed its deadline ({gate.deadline:%Y-%m-%d %H:%M} UTC)"
    if any(v.user == decision.user for v in gate.votes):
        return f"{decision.user} has already decided on gate {gate.gate_id}; one vote per person"
    if decision.verdict != "approve" and not decision.comment.strip():
        return "a rejection or a request for changes needs a comment saying why"
    role = role_for(gate, decision)
    if role is None:
        held = [r for r in gate.roles if decision.user in gate.eligible.get(r, [])]
        if not held:
            return (
                f"{decision.user} holds none of the roles gate {gate.gate_id} needs "
                f"({', '.join(gate.roles)})"
            )
        if decision.role is not None and decision.role not in held:
            return f"{decision.user} does not hold the role {decision.role}"
        waiting = ", ".join(pending_roles(gate)) or "none"
        return (
            f"it is not {', '.join(held)}'s turn on gate {gate.gate_id}: roles deciding "
            f"now: {waiting}"
        )
    return None


def role_for(gate: GateState, decision: ApprovalDecision) -> str | None:
    """The pending role this user decides for: the one named, or their only one."""
    mine = [r for r in pending_roles(gate) if decision.user in gate.eligible.get(r, [])]
    if decision.role is not None:
        return decision.role if decision.role in mine else None
    return mine[0] if mine else None


def apply(gate: GateState, decision: ApprovalDecision, now: datetime) -> Vote:
    """Record an accepted decision and settle the gate if it is decided."""
    role = role_for(gate, decision)
    assert role is not None, "apply only after refusal() said None"
    vote = Vote(
        user=decision.user,
        role=role,
        verdict=decision.verdict,
        comment=decision.comment.strip(),
        at=now,
    )
    gate.votes.append(vote)
    gate.status = settle(gate)
    return vote


def settle(gate: GateState) -> GateStatus:
    """The first rejection or request for changes decides; otherwise every role's quorum."""
    for vote in gate.votes:
        if vote.verdict == "reject":
            return "rejected"
        if vote.verdict == "request_changes":
            return "changes_requested"
    if all(approvals(gate, role) >= gate.quorum for role in gate.roles):
        return "approved"
    return "open"


def waiting_on(gate: GateState) -> list[str]:
    """Logins that may decide now and have not: who a reminder goes to."""
    voted = {v.user for v in gate.votes}
    users: list[str] = []
    for role in pending_roles(gate):
        users += [u for u in gate.eligible.get(role, []) if u not in voted and u not in users]
    return users


def view(gate: GateState) -> GateView:
    """What an approver gets back after deciding."""
    return GateView(
        gate_id=gate.gate_id,
        status=gate.status,
        pending_roles=pending_roles(gate) if gate.status == "open" else [],
        votes=list(gate.votes),
        deadline=gate.deadline,
    )
