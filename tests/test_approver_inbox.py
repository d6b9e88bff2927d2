"""The approvers' web inbox: a real browser (Playwright driving Debian's Chromium,
which `scripts/install-browser` installs) signs in with the signed link, reads
and decides a gate on the time-skipping server; and plain HTTP checks of the
sign-in links, the CSRF token and the page's escaping."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect
from support import Stack, eventually
from temporalio.testing import WorkflowEnvironment
from test_approvals import DIRECTORY, accepted_updates, customer_mail, open_gate, stack_for
from typer.testing import CliRunner

from tidings.approver_links import TOKEN_SALT, approver_link, read_approver_token
from tidings.settings import Settings
from tidings.starter.approver_web import CSP, SESSION_COOKIE
from tidings.starter.cli import app as cli
from tidings.starter.outbox import OutboxMessage
from tidings.starter.ports import free_port
from tidings.starter.service import create_app, running_service
from tidings.starter.smtp_sink import SmtpSink

ARTIFACTS = Path(__file__).parent / "artifacts" / "approver-inbox"
TALL: ViewportSize = {"width": 1280, "height": 2200}
"""Chromium paints a frame once it has been in view: the whole page fits, preview included."""
CART_URL = "https://s.example/c/1"
SUBJECT = "You left something in your cart"


@pytest.fixture
async def two_roles(
    time_skipping: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    approve = "{roles: [legal, compliance], deadline: 1d}"
    async with stack_for(time_skipping, smtp, tmp_path, approve) as stack:
        yield stack


@asynccontextmanager
async def served(stack: Stack) -> AsyncIterator[str]:
    """The HTTP service with the approvers' inbox, on a free port; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(
        database=stack.client.database,
        secret_key=stack.settings.signing_key(),  # the worker's: notices' links work here
        company="Acme",
        sms_help_text="",
        public_url=base,
        approvals=stack.client.approvals,
    )
    async with running_service(app, host="127.0.0.1", port=port) as url:
        yield url


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is missing: run `sh scripts/install-browser` (the README's command)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def screenshots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


async def shot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def notice_link(stack: Stack, user: str, base: str) -> str:
    """The sign-in link in the user's approval notice, pointed at this service."""

    async def sent() -> list[OutboxMessage]:
        return stack.outbox(f"{user}@acme.example")

    [notice] = await eventually(sent)
    found = re.search(r"(https?://\S+/approvals/\S+)", notice.text)
    assert found is not None, notice.text
    link = urlsplit(found.group(1))
    return f"{base}{link.path}?{link.query}"


async def test_approvers_decide_in_the_browser(two_roles: Stack, contact_key: str) -> None:
    stack = two_roles
    secret = stack.settings.signing_key()
    gate = await open_gate(stack, contact_key)
    screenshots()
    taken: list[Path] = []
    async with served(stack) as base, chromium() as browser:
        # Lena (legal) signs in with her link and finds the gate in her inbox.
        lena = await browser.new_context(viewport=TALL)
        page = await lena.new_page()
        await page.goto(approver_link(base, secret, "lena"))
        assert page.url == f"{base}/approvals"  # the token is gone from the address
        [session] = [c for c in await lena.cookies() if c["name"] == SESSION_COOKIE]
        assert session["httpOnly"] and session["sameSite"] == "Lax"
        row = page.locator(f'tr[data-gate="{gate.id}"]')
        await expect(row).to_contain_text("offer / sign-off")
        await expect(row).to_contain_text("email · cart-reminder")
        await expect(row).to_contain_text("legal, compliance")
        await expect(row).to_contain_text("left")  # the time left before the deadline
        taken.append(await shot(page, "01-lena-inbox"))

        # The gate: its context and the exact message, the HTML only in a sandbox.
        await row.get_by_role("link").click()
        await expect(page).to_have_url(f"{base}/approvals/{gate.id}")
        await expect(page.locator("#preview-subject")).to_have_text(SUBJECT)
        await expect(page.locator("#preview-text")).to_contain_text("Your cart")
        await expect(page.locator("#context")).to_contain_text(contact_key)
        await expect(page.locator("#context")).to_contain_text("quorum 1 each, parallel")
        frame = page.locator("iframe#preview-html")
        assert await frame.get_attribute("sandbox") == ""
        message = page.frame_locator("iframe#preview-html")
        await expect(message.locator(f'a[href="{CART_URL}"]')).to_have_text("Return to your cart")
        assert await page.locator(f'a[href="{CART_URL}"]').count() == 0  # not in the page
        taken.append(await shot(page, "02-lena-gate"))

        # She approves with a comment: the gate still waits on compliance.
        await page.locator("#comment").fill("fine for US")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("#flash")).to_contain_text(
            f"You approved gate {gate.id} as legal; still waiting on compliance"
        )
        await expect(page.locator("#waiting")).to_have_text("compliance")
        await expect(page.locator("#votes")).to_contain_text("Lena (lena)")
        await expect(page.locator("#votes")).to_contain_text("fine for US")
        await expect(page.locator("#decided")).to_contain_text("You approved (as legal)")
        taken.append(await shot(page, "03-lena-approved"))
        await page.reload()  # the message was shown once
        await expect(page.locator("#flash")).to_have_count(0)

        # Carlos (compliance) rejects without a comment: the validator refuses.
        carlos = await browser.new_context(viewport=TALL)
        page = await carlos.new_page()
        await page.goto(await notice_link(stack, "carlos", base))  # from his approval notice
        await expect(page).to_have_url(f"{base}/approvals/{gate.id}")
        async with page.expect_response(lambda r: r.url.endswith("/decide")) as refused:
            await page.get_by_role("button", name="Reject").click()
        assert (await refused.value).status == 409
        await expect(page.locator("#error")).to_contain_text(
            "a rejection or a request for changes needs a comment saying why"
        )
        await expect(page.locator("#status")).to_have_text("open")
        taken.append(await shot(page, "04-carlos-refused"))

        # With a comment the rejection goes through, and closes the gate.
        await page.locator("#comment").fill("missing terms")
        await page.get_by_role("button", name="Reject").click()
        await expect(page.locator("#flash")).to_contain_text(
            f"You rejected gate {gate.id} as compliance; the gate is rejected"
        )
        await expect(page.locator("#status")).to_have_text("rejected")
        await expect(page.locator("#decide")).to_have_count(0)
        taken.append(await shot(page, "05-carlos-rejected"))

        # Closed gates leave the inbox.
        await page.goto(f"{base}/approvals")
        await expect(page.locator("#empty")).to_be_visible()

        # A forged link signs no one in.
        stranger = await browser.new_context(viewport=TALL)
        page = await stranger.new_page()
        forged = approver_link(base, "not-the-secret", "lena")
        response = await page.goto(forged)
        assert response is not None and response.status == 401
        await expect(page.locator("main")).to_contain_text("Ask whoever runs tidings for a new")
        assert await stranger.cookies() == []
        taken.append(await shot(page, "06-forged-link"))

    row_now = await stack.client.approvals.show(gate.id)
    assert row_now.status == "rejected"
    assert [(v.user, v.role, v.verdict, v.comment) for v in row_now.votes] == [
        ("lena", "legal", "approve", "fine for US"),
        ("carlos", "compliance", "reject", "missing terms"),
    ]
    result = await stack.result("offer", contact_key)
    assert (result.outcome, result.sends) == ("exited", 0)
    assert customer_mail(stack, contact_key) == []
    for path in taken:
        assert path.is_file() and path.stat().st_size > 1000, path
    assert len(taken) == 6


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def signed_in(http: httpx.AsyncClient, base: str, secret: str, user: str) -> str:
    """Sign `user` in on this client; returns the CSRF token of the inbox page."""
    landed = await http.get(approver_link(base, secret, user), follow_redirects=True)
    assert landed.status_code == 200, landed.text
    found = CSRF.search(landed.text)
    assert found is not None
    return found.group(1)


async def test_forms_need_the_sessions_csrf_token_and_links_expire(
    two_roles: Stack, contact_key: str
) -> None:
    stack = two_roles
    secret = stack.settings.signing_key()
    gate = await open_gate(stack, contact_key)
    async with served(stack) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/approvals")).status_code == 401
        decide = f"/approvals/{gate.id}/decide"
        assert (await http.post(decide, data={"verdict": "approve"})).status_code == 401

        # Sign-in links: forged, expired, or for someone not in the directory.
        old = URLSafeTimedSerializer(secret, salt=TOKEN_SALT, signer=_EightDaysAgo)
        expired = str(old.dumps({"user": "lena"}))
        assert read_approver_token(secret, expired) is None
        for token in ("forged", expired, approver_link(base, secret, "nobody").split("=")[1]):
            page = await http.get("/approvals/login", params={"token": token})
            assert page.status_code == 401, token
            assert "new sign-in link" in page.text
            assert SESSION_COOKIE not in page.headers.get("set-cookie", "")

        first_csrf = await signed_in(http, base, secret, "lena")
        csrf = await signed_in(http, base, secret, "lena")  # a new session: a new token
        page = await http.get(f"/approvals/{gate.id}")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["cache-control"] == "no-store"
        # The message's HTML is only in the iframe's srcdoc, escaped.
        assert f'<a href="{CART_URL}"' not in page.text
        assert f"&lt;a href=&#34;{CART_URL}&#34;" in page.text
        assert "<iframe" in page.text and " sandbox " in page.text

        forms = [
            {"verdict": "approve", "comment": "ok"},
            {"verdict": "approve", "comment": "ok", "csrf": "forged"},
            {"verdict": "approve", "comment": "ok", "csrf": first_csrf},  # the old session's
            {"verdict": "approve", "comment": "ok", "csrf": csrf + "x"},
        ]
        for form in forms:
            answer = await http.post(decide, data=form)
            assert answer.status_code == 403, form
            assert "Nothing was decided" in answer.text
        row = await stack.client.approvals.show(gate.id)
        assert (row.status, row.votes) == ("open", [])
        assert await accepted_updates(stack, contact_key) == 0

        # Someone holding none of the gate's roles may not read it.
        other = httpx.AsyncClient(base_url=base)
        async with other:
            await signed_in(other, base, secret, "max")
            assert (await other.get(f"/approvals/{gate.id}")).status_code == 403

        # The same form with the session's token is decided.
        answer = await http.post(decide, data={"verdict": "approve", "csrf": csrf})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/approvals/{gate.id}"
        shown = await http.get(answer.headers["location"])
        assert "still waiting on compliance" in shown.text
    assert [v.user for v in (await stack.client.approvals.show(gate.id)).votes] == ["lena"]


class _EightDaysAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 8 * 86400


def test_the_cli_prints_a_sign_in_link(tmp_path: Path) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY)
    env = {
        "TIDINGS_DATA_DIR": str(tmp_path / "data"),
        "TIDINGS_DIRECTORY_FILE": str(directory),
        "TIDINGS_PUBLIC_URL": "https://tidings.acme.example/",
    }
    runner = CliRunner()
    printed = runner.invoke(cli, ["approvals", "link", "lena"], env=env)
    assert printed.exit_code == 0, printed.output
    link = urlsplit(printed.stdout.strip())
    assert (link.scheme, link.netloc, link.path) == (
        "https",
        "tidings.acme.example",
        "/approvals/login",
    )
    token = parse_qs(link.query)["token"][0]
    secret = Settings(data_dir=tmp_path / "data").signing_key()  # the one the service uses
    assert read_approver_token(secret, token) == "lena"
    assert read_approver_token("another-key", token) is None
    unknown = runner.invoke(cli, ["approvals", "link", "nobody"], env=env)
    assert unknown.exit_code == 1
    assert "'nobody' is not in the directory" in unknown.output
