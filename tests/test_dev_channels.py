"""`tidings dev` gives every channel a local stand-in that records what it got, and
`tidings outbox` lists them all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from support import EXAMPLE_JOURNEYS, EXAMPLE_TEMPLATES
from typer.testing import CliRunner

from tidings.activities.channels import OutgoingMessage
from tidings.activities.channels.registry import channel_providers
from tidings.catalog import Catalog
from tidings.db.engine import Database
from tidings.settings import Settings
from tidings.starter.cli import app as cli
from tidings.starter.dev import DEV_PROVIDERS_PATH, DevPorts, dev_app, dev_settings
from tidings.starter.ports import free_port
from tidings.starter.service import running_service

PARTS = {
    "sms": {"text": "Acme: hello. Reply STOP to opt out."},
    "push": {"title": "Hello", "body": "From Acme", "deep_link": "acme://home"},
    "chat": {"text": "Hello from Acme"},
    "webhook": {"text": "Hello from Acme"},
}
ADDRESSES = {"sms": "+14155550100", "push": "device-token-1234", "chat": "", "webhook": ""}


async def test_every_dev_provider_reaches_its_stand_in_and_the_outbox_lists_them(
    tmp_path: Path,
) -> None:
    ports = DevPorts(http=free_port())
    settings = dev_settings(
        Settings(data_dir=tmp_path, journeys_dir=EXAMPLE_JOURNEYS, templates_dir=EXAMPLE_TEMPLATES),
        ports,
    )
    database = Database(settings.database_url)
    app = dev_app(settings, database, Catalog.from_settings(settings))
    providers = channel_providers(settings, database)
    try:
        async with running_service(app, host="127.0.0.1", port=ports.http) as url:
            # A browser's subscription at the dev push service, for the Web Push provider.
            async with httpx.AsyncClient() as client:
                answer = await client.post(f"{url}{DEV_PROVIDERS_PATH}/webpush/subscriptions")
            addresses = {**ADDRESSES, "webpush": answer.text}
            for channel, parts in PARTS.items():
                for n, provider in enumerate(providers[channel]):
                    message = OutgoingMessage(
                        channel=channel,
                        to=addresses.get(provider.name, ADDRESSES[channel]),
                        contact_key="ada",
                        parts=parts,
                        delivery_id=f"{channel}{n}",
                    )
                    await asyncio.to_thread(provider.send, message)
    finally:
        database.dispose()

    assert {name: [p.name for p in found] for name, found in providers.items()} == {
        "sms": ["twilio", "vonage"],
        "chat": ["slack", "teams"],
        "in_app": ["inbox"],
        "push": ["fcm", "webpush"],
        "webhook": ["webhook"],
    }
    result = CliRunner().invoke(cli, ["outbox", "--json"], env={"TIDINGS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    listed = [(m["channel"], m["sender"]) for m in json.loads(result.output)]
    assert sorted(listed) == sorted(
        [
            ("sms", "twilio"),
            ("sms", "vonage"),
            ("push", "fcm"),
            ("push", "webpush"),
            ("chat", "slack"),
            ("chat", "teams"),
            ("webhook", "webhook"),
        ]
    )
