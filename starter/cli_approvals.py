"""`tidings approvals list|show|approve|reject|request-changes|link`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from tidings.approver_links import TOKEN_MAX_AGE, approver_link
from tidings.connection import connect
from tidings.db.engine import Database
from tidings.directory import load_directory
from tidings.models.approvals import GateRow, GateView, Verdict
from tidings.starter.approval_admin import ApprovalAdmin
from tidings.starter.cli_support import DataDir, echo_json, friendly_errors, settings_for

R = TypeVar("R")

approvals_app = typer.Typer(
    help="Approval gates: what waits for legal, compliance, PR; decide on them.",
    no_args_is_help=True,
)
GateId = Annotated[str, typer.Argument(help="The gate's id (see `tidings approvals list`).")]
AsUser = Annotated[str, typer.Option("--as", help="Your login in the approver directory.")]
Role = Annotated[
    str | None, typer.Option(help="The role you decide for, when you hold several it needs.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DID: dict[Verdict, str] = {
    "approve": "approved",
    "reject": "rejected",
    "request_changes": "requested changes on",
}


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")


def _run(
    data_dir: DataDir, work: Callable[[ApprovalAdmin], Awaitable[R]], *, deciding: bool = False
) -> R:
    """Reading gates needs the database only; deciding connects to Temporal too."""

    async def run() -> R:
        settings = settings_for(data_dir)
        client = await connect(settings) if deciding else None
        database = await asyncio.to_thread(Database, settings.database_url)
        try:
            admin = ApprovalAdmin(database, load_directory(settings.directory_file), client)
            return await work(admin)
        finally:
            database.dispose()

    return asyncio.run(run())


@approvals_app.command("list")
@friendly_errors
def list_gates(
    role: Annotated[str | None, typer.Option(help="Only gates waiting on this role.")] = None,
    mine: Annotated[
        str | None, typer.Option("--mine", help="Only gates waiting on a role this user holds.")
    ] = None,
    all_gates: Annotated[bool, typer.Option("--all", help="Decided gates too.")] = False,
    as_json: Json = False,
    data_dir: DataDir = None,
) -> None:
    """Gates waiting for a decision, soonest deadline first."""
    status = None if all_gates else "open"
    gates = _run(data_dir, lambda admin: admin.list(role=role, user=mine, status=status))
    if as_json:
        echo_json([g.model_dump(mode="json", exclude={"preview"}) for g in gates])
        return
    if not gates:
        typer.echo("no gates waiting" if not all_gates else "no gates")
        return
    for gate in gates:
        waiting = ", ".join(gate.pending_roles) or "-"
        typer.echo(
            f"{gate.id}  {gate.status:<17} due {_when(gate.deadline)}  {_subject(gate)}  "
            f"waiting on: {waiting}"
        )


def _subject(gate: GateRow) -> str:
    """What the gate is about: a template version in review, or a journey's message."""
    if gate.scope == "content":
        translation = f" ({gate.step_id} translation)" if gate.step_id else ""
        return f"review of template {gate.template} v{gate.journey_version}{translation}"
    who = "every contact at the step" if gate.scope == "batch" else f"contact {gate.contact_key}"
    return f"{gate.journey}/{gate.step_id}  {gate.channel} {gate.template}  {who}"


@approvals_app.command("show")
@friendly_errors
def show(gate_id: GateId, as_json: Json = False, data_dir: DataDir = None) -> None:
    """The gate, its votes, and the exact message it would let out."""
    gate = _run(data_dir, lambda admin: admin.show(gate_id))
    if as_json:
        echo_json(gate.model_dump(mode="json"))
        return
    _print_gate(gate)


@approvals_app.command("approve")
@friendly_errors
def approve(
    gate_id: GateId,
    user: AsUser,
    comment: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    role: Role = None,
    data_dir: DataDir = None,
) -> None:
    """Approve the gated message."""
    _decide(gate_id, user, "approve", comment, role, data_dir)


@approvals_app.command("reject")
@friendly_errors
def reject(
    gate_id: GateId,
    user: AsUser,
    comment: Annotated[str, typer.Option(help="Why (required).")],
    role: Role = None,
    data_dir: DataDir = None,
) -> None:
    """Reject the gated message: the journey goes where the step's on_reject says."""
    _decide(gate_id, user, "reject", comment, role, data_dir)


@approvals_app.command("request-changes")
@friendly_errors
def request_changes(
    gate_id: GateId,
    user: AsUser,
    comment: Annotated[str, typer.Option(help="What must change (required).")],
    role: Role = None,
    data_dir: DataDir = None,
) -> None:
    """Send the message back: it is not sent; the journey follows on_reject."""
    _decide(gate_id, user, "request_changes", comment, role, data_dir)


@approvals_app.command("link")
@friendly_errors
def link(
    user: Annotated[str, typer.Argument(help="The approver's login in the directory.")],
    data_dir: DataDir = None,
) -> None:
    """Print a sign-in link to the approvers' web inbox for USER (valid 7 days)."""
    settings = settings_for(data_dir)
    load_directory(settings.directory_file).user(user)  # an unknown login is refused
    typer.echo(approver_link(settings.public_url, settings.signing_key(), user))
    typer.echo(
        f"It signs in as {user} for {TOKEN_MAX_AGE.days} days: send it to them alone.", err=True
    )


def _decide(
    gate_id: str,
    user: str,
    verdict: Verdict,
    comment: str,
    role: str | None,
    data_dir: DataDir,
) -> None:
    view = _run(
        data_dir,
        lambda admin: admin.decide(gate_id, user=user, verdict=verdict, comment=comment, role=role),
        deciding=True,
    )
    typer.echo(_outcome(view))


def _outcome(view: GateView) -> str:
    vote = view.votes[-1]
    line = f"{vote.user} ({vote.role}) {DID[vote.verdict]} gate {view.gate_id}"
    if view.status == "open":
        return f"{line}; still waiting on: {', '.join(view.pending_roles)}"
    return f"{line}; the gate is {view.status.replace('_', ' ')}"


def _print_gate(gate: GateRow) -> None:
    typer.echo(f"gate {gate.id}: {gate.status}, due {_when(gate.deadline)}")
    typer.echo(f"  {_subject(gate)}")
    typer.echo(
        f"  needs: {', '.join(gate.roles)} (quorum {gate.quorum} each, {gate.order}); "
        f"waiting on: {', '.join(gate.pending_roles) or '-'}"
    )
    for vote in gate.votes:
        said = f": {vote.comment}" if vote.comment else ""
        typer.echo(f"  {_when(vote.at)} {vote.user} ({vote.role}) {vote.verdict}{said}")
    for finding in gate.findings:
        typer.echo(f"  finding: {finding}")
    preview = gate.preview
    if "error" in preview:
        typer.echo(f"  preview: {preview['error']}")
        return
    if gate.scope == "content":
        typer.echo(f"  --- {'changes' if 'diff' in preview else 'text'}")
        typer.echo(str(preview.get("diff") or preview.get("source", "")))
        return
    typer.echo(
        f"  message: {gate.channel} {gate.template} v{preview.get('version')} "
        f"({preview.get('locale')})"
    )
    parts = preview.get("parts")
    if isinstance(parts, dict):
        for name in ("subject", "preheader", "title", "text", "body"):
            value = parts.get(name)
            if isinstance(value, str) and value:
                typer.echo(f"  --- {name}\n{value}")


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
