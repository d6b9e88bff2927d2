"""Screenshots of the Temporal UI for a running example journey, into docs/.

    .venv/bin/python scripts/ui_screenshots.py [--out docs]

Starts `tidings dev` on free ports with a throwaway data dir (nothing of yours
is touched, nothing collides with a `tidings dev` already running), puts the
contact `ada` into the onboarding journey (which then sleeps a day) and the
retention-offer journey (which waits at its approval gate) with the CLI, and
has headless Chromium (Debian's, see scripts/install-browser; Playwright comes
with `pip install -e '.[test]'`) photograph the UI: the workflow list filtered
by search attributes, a journey's summary, details and current details, its
timeline with activity and timer summaries, and the `status` query. Then it
stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
from playwright.async_api import Browser, Page, async_playwright, expect

from tidings import naming
from tidings.starter.dev import find_binary
from tidings.starter.ports import free_port, port_in_use

ROOT = Path(__file__).resolve().parent.parent
CONTACT = "ada"
NAMESPACE = "default"
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1400, 900
READY_TIMEOUT_SECONDS = 90
UI_TIMEOUT_MS = 30_000
LIST_COLUMNS = ["Status", "Workflow ID", *(key.name for key in naming.SEARCH_ATTRIBUTES), "Start"]
"""The workflow list's columns: the UI keeps them in the browser's localStorage."""
TOUR = [
    # README's five-minute tour, as far as a journey that sleeps and one that waits
    # on a person: both stay that way while the pictures are taken.
    f"identify {CONTACT} --email ada@example.com --timezone Europe/London "
    "--jurisdiction GB --trait first_name=Ada",
    f"consent grant {CONTACT} --channel email --basis express "
    "--proof form=signup --proof text='Email me tips and offers'",
    f"track {CONTACT} signed_up --prop plan=pro --event-id evt-1",
    f"track {CONTACT} churn_risk_detected --event-id evt-2",
]
EXPECTED_STEPS = ("step wait-a-day (wait)", "step sign-off (approve)")


@dataclass(frozen=True)
class Stack:
    """A running `tidings dev` and how to reach it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    ui: str
    ports: tuple[int, ...]

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [find_binary("tidings"), *args], env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"tidings {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout


@contextmanager
def tidings_dev(data_dir: Path) -> Iterator[Stack]:
    """`tidings dev` on free ports, ready; stopped (with its Temporal server) on exit."""
    ports = {name: free_port() for name in _port_options()}
    # Only this stack's settings: none of the caller's TIDINGS_* or TEMPORAL_* leak in.
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TIDINGS_", "TEMPORAL_"))
    }
    env = {
        **inherited,
        "TIDINGS_DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "TEMPORAL_NAMESPACE": NAMESPACE,
    }
    command = [find_binary("tidings"), "dev"]
    for name, port in ports.items():
        command += [f"--{name}-port", str(port)]
    log_path = data_dir.parent / "tidings-dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = Stack(process, env, f"http://127.0.0.1:{ports['ui']}", tuple(ports.values()))
    try:
        _wait_until_ready(stack, log_path)
        yield stack
    finally:
        _stop(stack)


def _port_options() -> list[str]:
    """Every `--NAME-port` option of `tidings dev` (temporal, ui, smtp, http, ...)."""
    usage = subprocess.run(
        [find_binary("tidings"), "dev", "--help"],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = list(dict.fromkeys(re.findall(r"--([a-z]+)-port\b", usage)))
    if not {"temporal", "ui"} <= set(names):
        raise SystemExit(f"`tidings dev --help` lists no --temporal-port/--ui-port:\n{usage}")
    return names


def _wait_until_ready(stack: Stack, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise SystemExit(f"tidings dev exited at start:\n{log_path.read_text()[-3000:]}")
        log = log_path.read_text(errors="replace")
        if "tidings dev is running" in log and _answers(stack.ui):
            return
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise SystemExit(f"tidings dev was not ready in {READY_TIMEOUT_SECONDS}s:\n{tail}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(stack: Stack) -> None:
    """Ctrl-C, as a person would: tidings dev stops its worker and Temporal server."""
    process = stack.process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 15
    while busy := [port for port in stack.ports if port_in_use(port)]:
        if time.monotonic() > deadline:
            raise SystemExit(f"ports {busy} are still in use after tidings dev stopped")
        time.sleep(0.2)


def run_tour(stack: Stack) -> None:
    for command in TOUR:
        print(f"$ tidings {command}")
        print(stack.cli(*shlex.split(command)), end="")
    deadline = time.monotonic() + 60
    while True:
        status = stack.cli("status", CONTACT)
        if all(step in status for step in EXPECTED_STEPS):
            print(f"$ tidings status {CONTACT}\n{status}", end="")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the journeys did not reach their waits:\n{status}")
        time.sleep(0.5)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("Chromium is missing: run `sh scripts/install-browser`")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, ui: str) -> Page:
    context = await browser.new_context(
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}, timezone_id="UTC"
    )
    columns = {NAMESPACE: [{"label": label, "pinned": False} for label in LIST_COLUMNS]}
    for column in columns[NAMESPACE][:2]:
        column["pinned"] = True
    await context.add_init_script(
        "localStorage.setItem('namespace-workflow-table-columns', "
        f"JSON.stringify({json.dumps(columns)}));"
    )
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    # Room for the search attribute columns: the navigation folds to its icons.
    await page.goto(f"{ui}/namespaces/{NAMESPACE}/workflows")
    await page.get_by_role("button", name="Collapse Navigation").click()
    return page


def workflow_url(ui: str, workflow_id: str) -> str:
    return f"{ui}/namespaces/{NAMESPACE}/workflows/{quote(workflow_id, safe='')}"


async def open_tab(page: Page, ui: str, workflow_id: str, tab: str) -> None:
    """A workflow's page (the UI picks its latest run), at one of its tabs."""
    await page.goto(workflow_url(ui, workflow_id))
    await expect(page.get_by_role("heading", name=workflow_id)).to_be_visible()
    await page.get_by_role("tab", name=tab).first.click()


async def scroll_to(page: Page, heading: str) -> None:
    await page.get_by_role("heading", name=heading, exact=True).evaluate(
        "heading => heading.scrollIntoView({block: 'start'})"
    )


async def shoot(page: Page, path: Path) -> None:
    await page.mouse.move(0, VIEWPORT_HEIGHT - 1)  # no hover tooltips in the picture
    await page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


async def take_screenshots(ui: str, out: Path) -> None:
    onboarding = naming.journey_workflow_id("onboarding", CONTACT)
    retention = naming.journey_workflow_id("retention-offer", CONTACT)
    async with chromium() as browser:
        page = await new_page(browser, ui)

        # Where is ada? The list, filtered by the search attributes.
        query = f'ContactKey="{CONTACT}"'
        await page.goto(f"{ui}/namespaces/{NAMESPACE}/workflows?{urlencode({'query': query})}")
        table = page.locator("table")
        for workflow_id in (onboarding, retention):
            await expect(table.get_by_role("link", name=workflow_id)).to_be_visible()
        await expect(table.get_by_text("approval:")).to_be_visible()
        await shoot(page, out / "ui-workflows.png")

        # Why? Summary and details from the start, current details from the step.
        await open_tab(page, ui, onboarding, "User Metadata")
        # The UI renders each of the three as markdown, in an iframe of its own.
        summary, details, current = (page.frame_locator("iframe").nth(i) for i in range(3))
        await expect(summary.get_by_text("onboarding v1")).to_be_visible()
        await expect(details.get_by_text("Trigger:")).to_be_visible()
        await expect(current.get_by_text("Waiting 1d, until")).to_be_visible()
        await shoot(page, out / "ui-current-details.png")

        # What happened: the timeline, with the timer's and the send's summaries.
        await open_tab(page, ui, onboarding, "Timeline")
        timer = page.get_by_text("wait-a-day: wait 1d").first
        await expect(timer).to_be_visible()
        await expect(page.get_by_text("welcome: email welcome").first).to_be_visible()
        await scroll_to(page, "Timeline")
        await shoot(page, out / "ui-timeline.png")

        # The same, as the compact event history: each summary next to its event.
        await page.get_by_role("tab", name="Event History").click()
        await page.get_by_text("Compact", exact=True).click()
        await expect(page.get_by_text("wait-a-day: wait 1d").first).to_be_visible()
        await expect(page.get_by_text("welcome: email welcome").first).to_be_visible()
        await scroll_to(page, "Event History")
        await shoot(page, out / "ui-history.png")

        # The status query, on the journey waiting for a person's sign-off.
        await open_tab(page, ui, retention, "Queries")
        await page.get_by_role("button", name="Run Query").click()
        await expect(page.get_by_text("Waiting for approval from marketing-lead")).to_be_visible()
        await shoot(page, out / "ui-status-query.png")


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the Temporal UI, into docs/.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tidings-ui-") as scratch:
        with tidings_dev(Path(scratch) / "data") as stack:
            print(f"tidings dev is running; Temporal UI at {stack.ui}")
            run_tour(stack)
            asyncio.run(take_screenshots(stack.ui, out))
        print("tidings dev stopped")


if __name__ == "__main__":
    main()
