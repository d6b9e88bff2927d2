"""A contact's own webhook URL goes out only to allowed hosts (no SSRF through an address).

Chat and webhook providers post to the message's address when it is a URL;
anyone who can set a contact's address could otherwise make tidings call an
internal service. The operator's configured URL is never checked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.activities.channels import ChannelProvider, OutgoingMessage, PermanentSendError
from tidings.activities.channels.http import url_allowed
from tidings.activities.channels.registry import channel_providers
from tidings.activities.channels.slack import SlackConfig, SlackWebhook
from tidings.activities.channels.teams import TeamsConfig, TeamsWebhook
from tidings.activities.channels.webhook import StandardWebhook, WebhookConfig
from tidings.db.engine import Database
from tidings.settings import Settings
from tidings.starter.dev import DevPorts, dev_settings
from tidings.starter.ports import free_port
from tidings.starter.provider_sink import create_sink_app, read_records
from tidings.starter.service import running_service

SLACK = SlackConfig("").allowed_hosts
TEAMS = TeamsConfig("").allowed_hosts
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", SLACK),
        ("https://HOOKS.Slack.com/services/T0/B0/x", SLACK),
        ("https://acme.webhook.office.com/webhookb2/x", TEAMS),
        ("https://prod-12.westus.logic.azure.com:443/workflows/x", TEAMS),
        ("http://127.0.0.1:8080/slack/ops", ("127.0.0.1",)),
        ("https://hooks.acme.example/x", ("HOOKS.ACME.EXAMPLE",)),
    ],
)
def test_allowed(url: str, allowed: tuple[str, ...]) -> None:
    assert url_allowed(url, allowed)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://169.254.169.254/latest/meta-data/", SLACK),
        ("https://hooks.slack.com@evil.example/services/x", SLACK),  # host is evil.example
        ("https://hooks.slack.com.evil.example/x", SLACK),
        ("https://webhook.office.com.evil.example/x", TEAMS),
        ("https://evilwebhook.office.com/x", TEAMS),
        ("https://webhook.office.com/x", TEAMS),  # `*.` is for subdomains only
        ("http://acme.webhook.office.com/x", TEAMS),  # http needs the host listed by name
        ("http://localhost:8080/x", ("127.0.0.1",)),
        ("https://crm.acme.example/x", ()),  # generic webhooks: nothing until listed
        ("https:///x", SLACK),
    ],
)
def test_refused(url: str, allowed: tuple[str, ...]) -> None:
    assert not url_allowed(url, allowed)


@dataclass
class Sink:
    url: str
    record_path: Path

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.record_path)


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[Sink]:
    record_path = tmp_path / "sink.jsonl"
    app = create_sink_app(record_path, webhook_secret=WEBHOOK_SECRET)
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield Sink(url, record_path)


def providers(sink: Sink, allowed: tuple[str, ...]) -> dict[str, ChannelProvider]:
    """Each provider with its own URL on the sink, and contacts' URLs limited to `allowed`."""
    return {
        "slack": SlackWebhook(SlackConfig(f"{sink.url}/slack/ops", 1.0, allowed)),
        "teams": TeamsWebhook(TeamsConfig(f"{sink.url}/teams/ops", 1.0, allowed)),
        "webhook": StandardWebhook(
            WebhookConfig(WEBHOOK_SECRET, f"{sink.url}/webhooks/crm", 1.0, allowed)
        ),
    }


PATHS = {"slack": "/slack/{}", "teams": "/teams/{}", "webhook": "/webhooks/{}"}


async def send(provider: ChannelProvider, to: str) -> str:
    message = OutgoingMessage(
        channel=provider.channel,
        to=to,
        contact_key="c-ann",
        parts={"text": "Hi"},
        delivery_id=f"d-{uuid.uuid4().hex[:12]}",
    )
    return await asyncio.to_thread(provider.send, message)


@pytest.mark.parametrize("name", sorted(PATHS))
async def test_a_listed_host_is_posted_to(name: str, sink: Sink) -> None:
    provider = providers(sink, ("127.0.0.1",))[name]
    await send(provider, sink.url + PATHS[name].format("acme"))
    [record] = sink.records()
    assert (record["provider"], record["to"]) == (name, "acme")


@pytest.mark.parametrize("name", sorted(PATHS))
async def test_other_hosts_are_refused_without_a_request_or_suppression(
    name: str, sink: Sink
) -> None:
    provider = providers(sink, ("127.0.0.1",))[name]
    port = httpx.URL(sink.url).port
    setting = f"TIDINGS_{name.upper()}_ALLOWED_HOSTS"
    for to, host in [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        # The sink itself, under a name that is not listed.
        (f"http://localhost:{port}" + PATHS[name].format("probe"), "localhost"),
        # Userinfo that looks like the listed host: the parsed host is localhost.
        (f"http://127.0.0.1@localhost:{port}" + PATHS[name].format("probe"), "localhost"),
    ]:
        with pytest.raises(PermanentSendError) as refused:
            await send(provider, to)
        assert f"'{host}'" in str(refused.value)
        assert setting in str(refused.value)
        # Refused by policy, not found dead: the contact's address is not suppressed.
        assert refused.value.suppress is None
    assert sink.records() == []

    # The operator's own URL is not checked (it is on 127.0.0.1, listed or not).
    await send(providers(sink, ())[name], "")
    assert len(sink.records()) == 1


def test_settings_reach_the_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDINGS_WEBHOOK_ALLOWED_HOSTS", raising=False)
    assert Settings(data_dir=tmp_path).webhook_allowed_hosts == []  # refused until listed

    monkeypatch.setenv("TIDINGS_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    monkeypatch.setenv("TIDINGS_TEAMS_WEBHOOK_URL", "https://acme.webhook.office.com/x")
    monkeypatch.setenv("TIDINGS_WEBHOOK_URL", "https://crm.acme.example/hooks")
    monkeypatch.setenv("TIDINGS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("TIDINGS_WEBHOOK_ALLOWED_HOSTS", '["*.acme.example"]')
    settings = Settings(data_dir=tmp_path)
    database = Database(settings.database_url, create_tables=False)
    try:
        found = channel_providers(settings, database)
    finally:
        database.dispose()
    slack, teams = found["chat"]
    [webhook] = found["webhook"]
    assert isinstance(slack, SlackWebhook) and isinstance(teams, TeamsWebhook)
    assert isinstance(webhook, StandardWebhook)
    assert slack.config.allowed_hosts == ("hooks.slack.com",)
    assert teams.config.allowed_hosts == ("*.webhook.office.com", "*.logic.azure.com")
    assert webhook.config.allowed_hosts == ("*.acme.example",)

    dev = dev_settings(settings, DevPorts(http=free_port()))
    assert "127.0.0.1" in dev.slack_allowed_hosts
    assert "127.0.0.1" in dev.teams_allowed_hosts
    assert dev.webhook_allowed_hosts == ["*.acme.example", "127.0.0.1"]
