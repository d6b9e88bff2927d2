"""Payload encryption: the codec, the codec server, and what the Temporal server keeps.

The end-to-end tests run real journeys and read the history back raw, the way
anyone with access to the Temporal server (its database, its UI without the
codec) would; the same history decrypted shows the data was really there.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from support import eventually, running_stack
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from test_dev_server import DevProcess
from test_privacy import decoded_history
from test_replay import HISTORIES, WORKFLOW_IDS

from tidings import naming
from tidings.codec import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    KeyRing,
    PayloadDecryptionError,
    PayloadKeyError,
    data_converter,
    dev_key_path,
    encrypting_converter,
    generate_key,
    key_ring,
)
from tidings.db.engine import Database
from tidings.errors import TidingsError
from tidings.settings import Settings
from tidings.starter.codec_http import CODEC_PATH, CodecAccess
from tidings.starter.dev import DevPorts, dev_settings, find_binary, temporal_command
from tidings.starter.ports import free_port
from tidings.starter.service import create_app
from tidings.starter.smtp_sink import SmtpSink
from tidings.worker import payload_key_warning, sandbox_runner
from tidings.workflows.approval import ApprovalGateWorkflow
from tidings.workflows.escalation import EscalationWorkflow
from tidings.workflows.journey import JourneyWorkflow

EMAIL = "quiet.person@hush.example"
PHONE = "+14155550123"
TIER = "zircon-tier-5581"
FIRST_NAME = "Quillon"
COUPON = "HUSH-COUPON-9127"
SECRETS = (EMAIL, "quiet.person", PHONE, "4155550123", TIER, FIRST_NAME, COUPON)

TOKEN = "operator-token-" + "x" * 32
UI = "https://temporal.acme.example"
ELSEWHERE = ("203.0.113.7", 40000)
"""A caller that is not on this machine (httpx's ASGI transport defaults to loopback)."""


def ring(text: str | None = None) -> KeyRing:
    return KeyRing.parse(text or f"k1:{generate_key()}")


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


# The codec


async def test_a_payload_round_trips_and_its_ciphertext_holds_nothing_readable() -> None:
    codec = EncryptionCodec(ring())
    original = payload(f'{{"tier": "{TIER}"}}')

    [encrypted] = await codec.encode([original])
    [again] = await codec.encode([original])
    [decrypted] = await codec.decode([encrypted])

    assert decrypted == original
    assert dict(encrypted.metadata) == {"encoding": ENCODING, KEY_ID: b"k1"}
    assert TIER.encode() not in encrypted.SerializeToString()
    assert b"json/plain" not in encrypted.SerializeToString()  # metadata is inside
    assert encrypted.data != again.data  # a fresh nonce each time


async def test_after_rotation_the_new_key_encrypts_and_the_old_one_still_decrypts() -> None:
    old_key, new_key = generate_key(), generate_key()
    before = EncryptionCodec(ring(f"2025:{old_key}"))
    after = EncryptionCodec(ring(f"2026:{new_key},2025:{old_key}"))
    [written_before] = await before.encode([payload("old")])

    [written_after] = await after.encode([payload("new")])

    assert written_after.metadata[KEY_ID] == b"2026"
    assert await after.decode([written_before]) == [payload("old")]
    with pytest.raises(PayloadKeyError, match="key id '2026'"):
        await before.decode([written_after])  # why new keys go everywhere before they encrypt


async def test_a_payload_under_an_unknown_key_id_names_it() -> None:
    [encrypted] = await EncryptionCodec(ring(f"gone:{generate_key()}")).encode([payload("x")])

    with pytest.raises(PayloadKeyError) as raised:
        await EncryptionCodec(ring()).decode([encrypted])

    assert "'gone'" in str(raised.value) and "TIDINGS_PAYLOAD_KEYS" in str(raised.value)


async def test_altered_ciphertext_or_a_swapped_key_id_fails_authentication() -> None:
    codec = EncryptionCodec(ring(f"a:{generate_key()},b:{generate_key()}"))
    [encrypted] = await codec.encode([payload("pay 100")])
    flipped = Payload()
    flipped.CopyFrom(encrypted)
    flipped.data = encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    relabelled = Payload()
    relabelled.CopyFrom(encrypted)
    relabelled.metadata[KEY_ID] = b"b"

    for tampered in (flipped, relabelled):
        with pytest.raises(PayloadDecryptionError, match="does not authenticate"):
            await codec.decode([tampered])


async def test_an_unencrypted_payload_passes_through_decoding() -> None:
    plain = payload('{"written": "before encryption was on"}')

    assert await EncryptionCodec(ring()).decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("k1", "expected `id:base64key` pairs"),
        (f"bad id:{generate_key()}", "expected `id:base64key` pairs"),
        ("k1:c2hvcnQ=", "must be 32 random bytes in base64"),
        ("k1:not base64!", "must be 32 random bytes in base64"),
        (f"k1:{generate_key()},k1:{generate_key()}", "listed twice"),
    ],
)
def test_misconfigured_keys_are_refused_naming_the_variable_and_the_fix(
    text: str, complaint: str
) -> None:
    with pytest.raises(PayloadKeyError) as raised:
        KeyRing.parse(text)

    assert str(raised.value).startswith("TIDINGS_PAYLOAD_KEYS: ")
    assert complaint in str(raised.value)
    if "pairs" in complaint or "bytes" in complaint:
        assert "os.urandom(32)" in str(raised.value)  # how to make a key


def test_the_first_listed_key_encrypts() -> None:
    keys = ring(f"new:{generate_key()}, old:{generate_key()}")

    assert (keys.active, list(keys.keys)) == ("new", ["new", "old"])


def test_keys_come_from_settings_else_from_the_dev_key_file_else_none(tmp_path: Path) -> None:
    assert key_ring(Settings(data_dir=tmp_path)) is None
    assert data_converter(Settings(data_dir=tmp_path)) is pydantic_data_converter

    dev_settings(Settings(data_dir=tmp_path), DevPorts(http=free_port()))
    from_file = key_ring(Settings(data_dir=tmp_path))
    configured = key_ring(Settings(data_dir=tmp_path, payload_keys=f"prod:{generate_key()}"))

    assert from_file is not None and from_file.active == "dev"
    assert configured is not None and configured.active == "prod"
    assert dev_key_path(tmp_path).stat().st_mode & 0o077 == 0  # the owner's only


def test_a_worker_without_keys_warns_that_payloads_are_stored_unencrypted(tmp_path: Path) -> None:
    unencrypted = payload_key_warning(Settings(data_dir=tmp_path))
    configured = payload_key_warning(Settings(payload_keys=f"k1:{generate_key()}"))
    dev_settings(Settings(data_dir=tmp_path), DevPorts(http=free_port()))
    dev_key = payload_key_warning(Settings(data_dir=tmp_path))

    assert unencrypted is not None and "unencrypted" in unencrypted
    assert "TIDINGS_PAYLOAD_KEYS" in unencrypted
    assert configured is None
    assert dev_key is not None and "dev key" in dev_key


async def test_failure_messages_and_stack_traces_are_encrypted_too() -> None:
    converter = encrypting_converter(ring())
    failure = Failure()
    try:
        raise ApplicationError(f"card of {EMAIL} declined")
    except ApplicationError as err:
        await converter.encode_failure(err, failure)

    raw = failure.SerializeToString()
    decoded = await converter.decode_failure(failure)

    assert EMAIL.encode() not in raw and b"test_codec.py" not in raw  # nor the stack trace
    assert EMAIL in str(decoded)


async def test_a_history_recorded_before_encryption_replays_with_encryption_on() -> None:
    path = next(p for p in HISTORIES if p.name.startswith("onboarding-completed"))
    history = WorkflowHistory.from_json(WORKFLOW_IDS.get(path.stem, path.stem), path.read_text())
    replayer = Replayer(
        workflows=[JourneyWorkflow, EscalationWorkflow, ApprovalGateWorkflow],
        data_converter=encrypting_converter(ring()),
        workflow_runner=sandbox_runner(),
    )

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, result.replay_failure


# End to end: what the Temporal server keeps


SECRET_KEEPER = """\
name: secret-keeper
version: 1
description: Reads a trait in a branch, then sends; for the encryption test.
trigger:
  event: ping
  properties:
    coupon: string
steps:
  - id: check
    branch:
      - when: "contact.traits.tier == 'lead'"
        goto: end
      - else: hello
  - id: hello
    send: {template: welcome, purpose: service, topic: onboarding}
"""


def encrypted_env(env: WorkflowEnvironment, keys: KeyRing) -> WorkflowEnvironment:
    """The same server, through a client (and so a worker) that encrypts."""
    plain = env.client
    client = Client(
        plain.service_client, namespace=plain.namespace, data_converter=encrypting_converter(keys)
    )
    return WorkflowEnvironment.from_client(client)


def raw_bytes(history: WorkflowHistory) -> bytes:
    """The events as the server stores and sends them (bytes fields verbatim)."""
    return b"".join(event.SerializeToString() for event in history.events)


def encrypted_payloads(node: Any) -> list[dict[str, Any]]:
    """Every encrypted payload in a history's JSON, as proto3 JSON objects."""
    found = []
    if isinstance(node, dict):
        encoding = node.get("metadata", {}).get("encoding") if "data" in node else None
        if encoding == base64.b64encode(ENCODING).decode():
            return [node]
        for value in node.values():
            found += encrypted_payloads(value)
    elif isinstance(node, list):
        for item in node:
            found += encrypted_payloads(item)
    return found


async def decrypted_text(history: WorkflowHistory, codec: EncryptionCodec) -> str:
    payloads = [
        json_format.ParseDict(node, Payload())
        for node in encrypted_payloads(json.loads(history.to_json()))
    ]
    return " ".join(p.data.decode(errors="replace") for p in await codec.decode(payloads))


async def test_a_raw_history_holds_none_of_a_contacts_email_phone_or_traits(
    dev_server: WorkflowEnvironment, smtp: SmtpSink, tmp_path: Path, contact_key: str
) -> None:
    keys = ring()
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "secret-keeper.yaml").write_text(SECRET_KEEPER)
    options: dict[str, Any] = {"data_dir": tmp_path / "data", "smtp": smtp}
    async with running_stack(
        encrypted_env(dev_server, keys), journeys_dir=journeys, **options
    ) as s:
        await s.client.identify(
            contact_key,
            jurisdiction="US",
            emails=[EMAIL],
            phones=[PHONE],
            traits={"tier": TIER, "first_name": FIRST_NAME},
        )
        await s.client.track(contact_key, "ping", {"coupon": COUPON})
        result = await s.result("secret-keeper", contact_key, timeout=40)
    # Read back by a client without the codec, as the server keeps it.
    workflow_id = naming.journey_workflow_id("secret-keeper", contact_key)
    history = await dev_server.client.get_workflow_handle(workflow_id).fetch_history()
    raw, readable = raw_bytes(history), decoded_history(history)
    decrypted = await decrypted_text(history, EncryptionCodec(keys))

    assert (result.outcome, result.sends) == ("completed", 1)
    assert [m.subject for m in s.outbox(EMAIL)] == [f"Welcome to Acme, {FIRST_NAME}!"]
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
        assert secret not in readable, secret
    # The data really went through Temporal: the trait read by the branch, the event.
    assert TIER in decrypted and COUPON in decrypted


# The codec server


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'app.db'}")
    yield database
    database.dispose()


def http(
    database: Database, access: CodecAccess, *, client: tuple[str, int] | None = None
) -> httpx.AsyncClient:
    app = create_app(
        database=database, secret_key="s" * 32, company="Acme", sms_help_text="", codec=access
    )
    transport = httpx.ASGITransport(app=app, client=client or ("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://tidings.test")


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Namespace": "default"}


def data(response: httpx.Response) -> bytes:
    """The payloads' data in a codec server's answer."""
    return b"".join(p.data for p in json_format.Parse(response.text, Payloads()).payloads)


async def test_an_operator_with_a_token_decodes_what_the_workers_encrypted(
    database: Database,
) -> None:
    keys = ring()
    original = payload(f'{{"tier": "{TIER}"}}')
    [encrypted] = await EncryptionCodec(keys).encode([original])
    access = CodecAccess(codec=EncryptionCodec(keys), tokens=("other-" + "y" * 32, TOKEN))

    async with http(database, access, client=ELSEWHERE) as client:
        decoded = await client.post(
            f"{CODEC_PATH}/decode", content=body(encrypted, payload("plain")), headers=bearer()
        )
        encoded = await client.post(
            f"{CODEC_PATH}/encode", content=body(original), headers=bearer()
        )

    assert decoded.status_code == 200, decoded.text
    assert json_format.Parse(decoded.text, Payloads()).payloads == [original, payload("plain")]
    assert encoded.status_code == 200, encoded.text
    [again] = json_format.Parse(encoded.text, Payloads()).payloads
    assert again.metadata["encoding"] == ENCODING
    assert await EncryptionCodec(keys).decode([again]) == [original]


async def test_without_the_right_token_the_codec_server_refuses(database: Database) -> None:
    keys = ring()
    [encrypted] = await EncryptionCodec(keys).encode([payload(TIER)])
    access = CodecAccess(codec=EncryptionCodec(keys), tokens=(TOKEN,))

    async with http(database, access, client=ELSEWHERE) as client:
        answers = [
            await client.post(f"{CODEC_PATH}/decode", content=body(encrypted), headers=headers)
            for headers in (
                {},
                bearer("operator-token-" + "z" * 32),
                bearer(TOKEN[:-1]),
                {"Authorization": f"Basic {TOKEN}"},
            )
        ]

    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert TIER not in answer.text


async def test_with_no_token_configured_the_codec_server_says_how_to_turn_it_on(
    database: Database, tmp_path: Path
) -> None:
    access = CodecAccess.from_settings(
        Settings(data_dir=tmp_path, payload_keys=f"k:{generate_key()}")
    )
    unencrypted = CodecAccess(tokens=(TOKEN,))

    async with http(database, access) as client:
        off = await client.post(f"{CODEC_PATH}/decode", content=body(), headers=bearer())
    async with http(database, unencrypted) as client:
        no_keys = await client.post(f"{CODEC_PATH}/decode", content=body(), headers=bearer())

    assert off.status_code == 403 and "TIDINGS_CODEC_TOKENS" in off.json()["detail"]
    assert no_keys.status_code == 503 and "TIDINGS_PAYLOAD_KEYS" in no_keys.json()["detail"]


async def test_a_tampered_payload_or_a_malformed_body_gets_a_clear_answer(
    database: Database,
) -> None:
    keys = ring()
    [encrypted] = await EncryptionCodec(keys).encode([payload("x")])
    encrypted.data = encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    access = CodecAccess(codec=EncryptionCodec(keys), tokens=(TOKEN,))

    async with http(database, access) as client:
        tampered = await client.post(
            f"{CODEC_PATH}/decode", content=body(encrypted), headers=bearer()
        )
        malformed = await client.post(f"{CODEC_PATH}/decode", content="{", headers=bearer())

    assert tampered.status_code == 422 and "does not authenticate" in tampered.text
    assert malformed.status_code == 400 and "proto3 JSON" in malformed.text


async def test_cors_answers_the_listed_ui_origin_only_and_on_the_codec_routes_only(
    database: Database,
) -> None:
    access = CodecAccess(codec=EncryptionCodec(ring()), tokens=(TOKEN,), cors_origins=(UI,))
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }

    async with http(database, access, client=ELSEWHERE) as client:
        allowed = await client.options(f"{CODEC_PATH}/decode", headers={"Origin": UI, **preflight})
        other = await client.options(
            f"{CODEC_PATH}/decode", headers={"Origin": "https://evil.example", **preflight}
        )
        elsewhere = await client.options("/health", headers={"Origin": UI, **preflight})
        refused = await client.post(f"{CODEC_PATH}/decode", content=body(), headers={"Origin": UI})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert {"authorization", "content-type", "x-namespace"} <= {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in elsewhere.headers
    # A refusal still carries CORS headers, so the UI can tell the user why.
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == UI


async def test_in_dev_the_ui_origin_decodes_from_this_machine_without_a_token(
    database: Database, tmp_path: Path
) -> None:
    ports = DevPorts(http=free_port(), ui=free_port())
    settings = dev_settings(Settings(data_dir=tmp_path), ports)
    access = CodecAccess.from_settings(settings)
    assert access.codec is not None
    [encrypted] = await access.codec.encode([payload(TIER)])
    ui = f"http://localhost:{ports.ui}"

    async def decode(client: tuple[str, int], headers: dict[str, str]) -> httpx.Response:
        async with http(database, access, client=client) as http_client:
            response: httpx.Response = await http_client.post(
                f"{CODEC_PATH}/decode", content=body(encrypted), headers=headers
            )
            return response

    local_ui = await decode(("127.0.0.1", 50000), {"Origin": ui})
    other_page = await decode(("127.0.0.1", 50000), {"Origin": "http://localhost:3000"})
    no_origin = await decode(("127.0.0.1", 50000), {})
    remote_ui = await decode(ELSEWHERE, {"Origin": ui})
    outside_dev = CodecAccess(codec=access.codec, cors_origins=access.cors_origins)
    async with http(database, outside_dev) as client:
        off = await client.post(
            f"{CODEC_PATH}/decode", content=body(encrypted), headers={"Origin": ui}
        )

    assert local_ui.status_code == 200, local_ui.text
    assert data(local_ui) == TIER.encode()
    for refused in (other_page, no_origin, remote_ui, off):
        assert refused.status_code == 403, refused.text
    assert Settings(data_dir=tmp_path).codec_allow_loopback_ui is False  # dev turns it on
    assert f"http://127.0.0.1:{ports.http}{CODEC_PATH}" in temporal_command(settings, ports)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ({"codec_tokens": ["short"]}, "at least 32"),
        ({"codec_cors_origins": ["*"]}, "is not an origin"),
        ({"codec_cors_origins": ["https://temporal.example.com/ui"]}, "is not an origin"),
    ],
)
def test_a_weak_token_or_a_wildcard_origin_is_refused_at_start(
    tmp_path: Path, setting: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(TidingsError, match=complaint):
        CodecAccess.from_settings(Settings(data_dir=tmp_path, **setting))


# `tidings dev`: the UI is wired to the codec server


async def test_tidings_dev_encrypts_and_the_ui_and_an_operators_cli_decode_via_its_codec_server(
    tmp_path: Path,
) -> None:
    dev = DevProcess(tmp_path / "data")
    dev.env["TIDINGS_CODEC_TOKENS"] = json.dumps([TOKEN])
    workflow_id = naming.journey_workflow_id("quick", "dev-enc")
    try:
        await dev.start()
        ui, codec = f"http://localhost:{dev.ports['ui']}", f"http://127.0.0.1:{dev.ports['http']}"
        await dev.cli("identify", "dev-enc", "--email", EMAIL, "--trait", f"tier={TIER}")
        await dev.cli("track", "dev-enc", "ping", "--prop", f"coupon={COUPON}")
        await eventually(lambda: dev.outbox())
        await eventually(lambda: paused(dev, "dev-enc"))  # `tidings status` decodes too
        plain = await Client.connect(
            dev.env["TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter
        )
        history = await plain.get_workflow_handle(workflow_id).fetch_history()
        payloads = encrypted_payloads(json.loads(history.to_json()))
        async with httpx.AsyncClient() as client:
            ui_settings = await client.get(f"http://127.0.0.1:{dev.ports['ui']}/api/v1/settings")
            from_ui = await client.post(
                f"{codec}{CODEC_PATH}/decode",
                json={"payloads": payloads},
                headers={"Origin": ui, "X-Namespace": "default"},
            )
            anonymous = await client.post(
                f"{codec}{CODEC_PATH}/decode", json={"payloads": payloads}
            )
        # An operator's Temporal CLI, with the codec server and a token, and without.
        codec_flags = [
            "--codec-endpoint",
            f"{codec}{CODEC_PATH}",
            "--codec-auth",
            f"Bearer {TOKEN}",
        ]
        with_codec = await workflow_show(dev, workflow_id, *codec_flags)
        without = await workflow_show(dev, workflow_id)
        assert await dev.stop() == 0
    finally:
        dev.kill()

    assert ui_settings.json()["Codec"]["Endpoint"] == f"{codec}{CODEC_PATH}"
    assert payloads and COUPON.encode() not in raw_bytes(history)
    assert from_ui.status_code == 200, from_ui.text
    assert COUPON.encode() in data(from_ui)
    assert anonymous.status_code == 401
    assert COUPON in decoded_history(WorkflowHistory.from_json(workflow_id, with_codec))
    assert COUPON not in decoded_history(WorkflowHistory.from_json(workflow_id, without))


async def paused(dev: DevProcess, contact_key: str) -> bool:
    return "step pause (wait)" in await dev.cli("status", contact_key)


async def workflow_show(dev: DevProcess, workflow_id: str, *flags: str) -> str:
    """`temporal workflow show --output json` against `tidings dev`'s server."""
    process = await asyncio.create_subprocess_exec(
        find_binary("temporal"),
        "workflow",
        "show",
        "--address",
        dev.env["TEMPORAL_ADDRESS"],
        "--workflow-id",
        workflow_id,
        "--output",
        "json",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()
