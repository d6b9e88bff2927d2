"""The approvers' web inbox: server-rendered pages over `ApprovalAdmin`.

- `GET /approvals/login?token=...`: a sign-in link (`tidings approvals link
  USER`, or the one in an approval notice) sets a signed session cookie
  (HttpOnly, SameSite=Lax, Secure behind https) and redirects to the inbox.
  `GET /approvals/{id}?token=...` does the same and opens that gate.
- `GET /approvals`: the gates waiting on a role the approver holds, soonest
  deadline first.
- `GET /approvals/{id}`: the gate's context, votes and lint findings, and the
  exact message it lets out; the email's HTML part is shown only inside a
  sandboxed iframe (`srcdoc`, no scripts, forms, popups or same-origin), never
  in the page itself.
- `POST /approvals/{id}/decide`: approve, reject or request changes, with a
  CSRF token derived from the session. The workflow's Update validator has
  the last word; its refusal is shown on the page (409) and changes nothing.

Every page is a jinja2 template (`approver_pages/`, autoescaped) served with
a strict Content-Security-Policy and no caching or referrer.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import structlog
from fastapi import APIRouter, Cookie, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from temporalio.service import RPCError

from tidings.approver_links import INBOX_PATH, TOKEN_MAX_AGE, read_approver_token
from tidings.db.approvals import UnknownGateError
from tidings.directory import StaffMember
from tidings.errors import InputError
from tidings.models.approvals import COMMENT_MAX, GateRow, GateView, Verdict
from tidings.starter.approval_admin import ApprovalAdmin

log = structlog.get_logger(__name__)

PAGES = Path(__file__).parent / "approver_pages"
SESSION_COOKIE = "tidings_approver"
FLASH_COOKIE = "tidings_approver_flash"
SESSION_SALT = "approver-session"
CSRF_SALT = "approver-csrf"
FLASH_SALT = "approver-flash"
GATE_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")
SESSION_MAX_AGE = timedelta(hours=12)
FLASH_MAX_AGE = timedelta(minutes=2)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
DID: dict[Verdict, str] = {
    "approve": "approved",
    "reject": "rejected",
    "request_changes": "requested changes on",
}
PAST: dict[Verdict, str] = {
    "approve": "approved",
    "reject": "rejected",
    "request_changes": "requested changes",
}
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: https:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Nothing runs: no scripts anywhere (the page has none; the preview's would be
refused twice, by the sandbox and by this policy, which srcdoc frames inherit)."""
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
ASK_FOR_A_LINK = (
    "Ask whoever runs tidings for a new sign-in link (they run: tidings approvals link "
    "<your login>), or open the link in your latest approval notice."
)

# Module-level: FastAPI resolves the routes' (string) annotations in this module.
SessionCookie = Annotated[str | None, Cookie(alias=SESSION_COOKIE)]
FlashCookie = Annotated[str | None, Cookie(alias=FLASH_COOKIE)]


@dataclass(frozen=True)
class Approver:
    login: str
    member: StaffMember
    session_id: str


class _Pages:
    """Rendering and the signed values (session, CSRF token, flash) the pages use."""

    def __init__(self, approvals: ApprovalAdmin, secret_key: str, public_url: str) -> None:
        self.approvals = approvals
        self.secure = public_url.startswith("https://")
        self.env = Environment(
            loader=FileSystemLoader(PAGES), autoescape=True, undefined=StrictUndefined
        )
        self.env.filters["when"] = _when
        self.sessions = URLSafeTimedSerializer(secret_key, salt=SESSION_SALT)
        self.csrf = URLSafeSerializer(secret_key, salt=CSRF_SALT)
        self.flashes = URLSafeTimedSerializer(secret_key, salt=FLASH_SALT)

    def render(self, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def problem(
        self, title: str, message: str, *, status: int, approver: Approver | None = None
    ) -> HTMLResponse:
        return self.render(
            "problem.html",
            status=status,
            title=title,
            message=message,
            approver=approver,
            csrf=self.csrf_token(approver) if approver else "",
        )

    def signed_out(self) -> HTMLResponse:
        return self.problem(
            "Please sign in", f"You are not signed in. {ASK_FOR_A_LINK}", status=401
        )

    def approver(self, cookie: str | None) -> Approver | None:
        if not cookie:
            return None
        try:
            data = self.sessions.loads(cookie, max_age=int(SESSION_MAX_AGE.total_seconds()))
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        login, session_id = data.get("user"), data.get("sid")
        if not isinstance(login, str) or not isinstance(session_id, str):
            return None
        member = self.approvals.directory.users.get(login)
        if member is None:  # removed from the directory since signing in
            return None
        return Approver(login, member, session_id)

    def sign_in(self, login: str, target: str) -> Response:
        session = self.sessions.dumps({"user": login, "sid": secrets.token_urlsafe(18)})
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            str(session),
            max_age=int(SESSION_MAX_AGE.total_seconds()),
            path=INBOX_PATH,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        log.info("approver signed in", user=login)
        return response

    def csrf_token(self, approver: Approver) -> str:
        return str(self.csrf.dumps(approver.session_id))

    def csrf_ok(self, approver: Approver, token: str) -> bool:
        try:
            session_id = self.csrf.loads(token)
        except (BadSignature, ValueError, TypeError):
            return False
        return isinstance(session_id, str) and hmac.compare_digest(
            session_id.encode(), approver.session_id.encode()
        )

    def set_flash(self, response: Response, approver: Approver, message: str) -> None:
        # Bound to the session: another approver's flash cookie shows nothing.
        value = self.flashes.dumps([approver.session_id, message])
        response.set_cookie(
            FLASH_COOKIE,
            str(value),
            max_age=int(FLASH_MAX_AGE.total_seconds()),
            path=INBOX_PATH,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def flash(self, approver: Approver, cookie: str | None) -> str:
        if not cookie:
            return ""
        try:
            session_id, message = self.flashes.loads(
                cookie, max_age=int(FLASH_MAX_AGE.total_seconds())
            )
        except (BadSignature, ValueError, TypeError):
            return ""
        return str(message) if session_id == approver.session_id else ""


def approver_router(approvals: ApprovalAdmin, *, secret_key: str, public_url: str) -> APIRouter:
    """The approvers' pages under /approvals (see the module's docstring)."""
    router = APIRouter(prefix=INBOX_PATH, tags=["approvals"], include_in_schema=False)
    pages = _Pages(approvals, secret_key, public_url)

    def signed_in_by(token: str, target: str) -> Response:
        login = read_approver_token(secret_key, token)
        if login is None or login not in approvals.directory.users:
            days = TOKEN_MAX_AGE.days
            return pages.problem(
                "This link does not work",
                f"The sign-in link is not valid: it may have expired (links last {days} "
                f"days), been cut short, or name someone no longer in the approver "
                f"directory. {ASK_FOR_A_LINK}",
                status=401,
            )
        return pages.sign_in(login, target)

    @router.get("/login", response_class=HTMLResponse)
    async def login(token: Annotated[str, Query(max_length=500)] = "") -> Response:
        return signed_in_by(token, INBOX_PATH)

    @router.post("/logout", response_class=HTMLResponse)
    async def logout(
        csrf: Annotated[str, Form(max_length=500)] = "",
        session: SessionCookie = None,
    ) -> Response:
        approver = pages.approver(session)
        if approver is not None and not pages.csrf_ok(approver, csrf):
            return pages.problem("Form expired", "Reload the page and try again.", status=403)
        response = pages.problem("Signed out", "You are signed out.", status=200)
        response.delete_cookie(SESSION_COOKIE, path=INBOX_PATH)
        return response

    @router.get("", response_class=HTMLResponse)
    async def inbox(session: SessionCookie = None) -> Response:
        approver = pages.approver(session)
        if approver is None:
            return pages.signed_out()
        gates = await approvals.list(user=approver.login)
        now = datetime.now(UTC)
        return pages.render(
            "inbox.html",
            approver=approver,
            csrf=pages.csrf_token(approver),
            gates=[
                {
                    "gate": gate,
                    "left": _time_left(gate.deadline, now),
                    "overdue": gate.deadline <= now,
                    "voted": any(v.user == approver.login for v in gate.votes),
                }
                for gate in gates
            ],
        )

    @router.get("/{gate_id}", response_class=HTMLResponse)
    async def gate_page(
        gate_id: str,
        token: Annotated[str | None, Query(max_length=500)] = None,
        session: SessionCookie = None,
        flash: FlashCookie = None,
    ) -> Response:
        if token is not None:  # a notice's link: sign in, then drop the token from the URL
            target = f"{INBOX_PATH}/{gate_id}" if GATE_ID.fullmatch(gate_id) else INBOX_PATH
            return signed_in_by(token, target)
        approver = pages.approver(session)
        if approver is None:
            return pages.signed_out()
        response = await _gate(pages, approver, gate_id, flash=pages.flash(approver, flash))
        if flash:
            response.delete_cookie(FLASH_COOKIE, path=INBOX_PATH)
        return response

    @router.post("/{gate_id}/decide", response_class=HTMLResponse)
    async def decide(
        gate_id: str,
        verdict: Annotated[str, Form(max_length=40)] = "",
        comment: Annotated[str, Form(max_length=COMMENT_MAX * 4)] = "",
        role: Annotated[str, Form(max_length=100)] = "",
        csrf: Annotated[str, Form(max_length=500)] = "",
        session: SessionCookie = None,
    ) -> Response:
        approver = pages.approver(session)
        if approver is None:
            return pages.signed_out()
        if not pages.csrf_ok(approver, csrf):
            log.warning("approver form without a valid CSRF token", user=approver.login)
            return pages.problem(
                "Form expired",
                "This form is no longer valid (you may have signed in again since it was "
                "opened). Nothing was decided: reload the gate's page and decide again.",
                status=403,
                approver=approver,
            )
        comment = comment.replace("\r\n", "\n")

        def again(error: str, status: int) -> Awaitable[HTMLResponse]:
            return _gate(pages, approver, gate_id, error=error, comment=comment, status=status)

        if verdict not in VERDICTS:
            return await again("Choose approve, reject or request changes.", 400)
        if len(comment) > COMMENT_MAX:
            return await again(f"The comment is too long (at most {COMMENT_MAX} characters).", 400)
        try:
            view = await approvals.decide(
                gate_id, user=approver.login, verdict=verdict, comment=comment, role=role or None
            )
        except UnknownGateError:
            return await _gate(pages, approver, gate_id)
        except InputError as err:  # the validator's refusal (DecisionRefusedError), mostly
            return await again(str(err), 409)
        except (RPCError, RuntimeError) as err:
            log.warning("decision could not reach Temporal", gate_id=gate_id, error=str(err))
            return await again(
                "Temporal could not be reached, so the decision may not have been recorded. "
                "Reload this page to see the votes, and decide again if yours is missing.",
                503,
            )
        response = RedirectResponse(f"{INBOX_PATH}/{gate_id}", status_code=303, headers=HEADERS)
        pages.set_flash(response, approver, _outcome(view, approver.login))
        return response

    return router


async def _gate(
    pages: _Pages,
    approver: Approver,
    gate_id: str,
    *,
    flash: str = "",
    error: str = "",
    comment: str = "",
    status: int = 200,
) -> HTMLResponse:
    try:
        if not GATE_ID.fullmatch(gate_id):
            raise UnknownGateError(gate_id)
        gate = await pages.approvals.show(gate_id)
    except UnknownGateError:
        return pages.problem(
            "No such gate",
            f"There is no approval gate {gate_id!r}. Your inbox lists the ones waiting for you.",
            status=404,
            approver=approver,
        )
    held = set(approver.member.roles)
    voted = [v for v in gate.votes if v.user == approver.login]
    if not held & set(gate.roles) and not voted:
        return pages.problem(
            "Not yours to decide",
            f"Gate {gate.id} asks {', '.join(gate.roles)}; you hold "
            f"{', '.join(approver.member.roles)}.",
            status=403,
            approver=approver,
        )
    now = datetime.now(UTC)
    mine = [r for r in gate.pending_roles if r in held]
    return pages.render(
        "gate.html",
        status=status,
        approver=approver,
        csrf=pages.csrf_token(approver),
        gate=gate,
        left=_time_left(gate.deadline, now),
        overdue=gate.deadline <= now,
        flash=flash,
        error=error,
        comment=comment,
        names={login: m.name for login, m in pages.approvals.directory.users.items()},
        my_vote=voted[0] if voted else None,
        past=PAST,
        my_roles=mine,
        can_decide=gate.status == "open" and bool(mine) and not voted,
        preview=_preview(gate),
        comment_max=COMMENT_MAX,
    )


def _outcome(view: GateView, login: str) -> str:
    vote = next((v for v in reversed(view.votes) if v.user == login), view.votes[-1])
    line = f"You {DID[vote.verdict]} gate {view.gate_id} as {vote.role}"
    if view.status == "open":
        return f"{line}; still waiting on {', '.join(view.pending_roles)}."
    return f"{line}; the gate is {view.status.replace('_', ' ')}."


PreviewKind = Literal["line", "block", "html", "link"]
PREVIEW_PARTS: dict[str, tuple[str, PreviewKind]] = {
    "subject": ("Subject", "line"),
    "preheader": ("Preheader", "line"),
    "title": ("Title", "line"),
    "text": ("Text", "block"),
    "body": ("Body", "block"),
    "deep_link": ("Deep link", "link"),
    "action": ("Action", "link"),
    "blocks": ("Blocks", "block"),
    "html": ("HTML", "html"),
}


def _preview(gate: GateRow) -> dict[str, Any]:
    """The message's parts in reading order, for the page (HTML goes to the iframe)."""
    preview = gate.preview
    if "error" in preview:
        return {"error": str(preview["error"]), "parts": []}
    parts = preview.get("parts")
    shown: list[dict[str, str]] = []
    if isinstance(parts, dict):
        for name, (label, kind) in PREVIEW_PARTS.items():
            value = parts.get(name)
            if value is None or value == "":
                continue
            text = value if isinstance(value, str) else _json(value)
            shown.append({"name": name, "label": label, "kind": kind, "value": text})
    return {
        "error": "",
        "version": preview.get("version"),
        "locale": preview.get("locale"),
        "parts": shown,
    }


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _time_left(deadline: datetime, now: datetime) -> str:
    seconds = int((deadline - now).total_seconds())
    span = _span(abs(seconds))
    return f"{span} left" if seconds > 0 else f"overdue by {span}"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{max(minutes, 1)} min" if seconds >= 60 else "under a minute"
