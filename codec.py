"""Payload encryption: every payload tidings hands Temporal is AES-256-GCM ciphertext.

Journey inputs carry a contact's event properties, the contact reads carry
traits, failures can quote either: with keys configured, the Temporal server
(its database, its UI, anyone who reads a history) holds none of it in clear.
The codec encrypts the whole serialized payload (metadata included), so not
even the payload's type or encoding leaks.

Keys come from `TIDINGS_PAYLOAD_KEYS` as `id:base64key` pairs separated by
commas, the first one encrypting and every one decrypting. Each payload names
its key id, so rotation is: add the new key at the end everywhere (workers,
the HTTP service, clients), then move it to the front; keep the old one for as
long as histories encrypted with it are retained.

A payload without the encrypted encoding is decoded as it is: histories
recorded before encryption was turned on keep replaying, and a half-rolled-out
fleet keeps working.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from tidings.errors import TidingsError
from tidings.settings import Settings, keep_secret_file

ENCODING = b"binary/encrypted"
"""An encrypted payload's `encoding` metadata (the only other metadata is its key id)."""
KEY_ID = "encryption-key-id"
"""The metadata naming the key a payload is encrypted with."""
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce: random ones are safe for 2**32 payloads per key
KEYS_VARIABLE = "TIDINGS_PAYLOAD_KEYS"
DEV_KEY_FILE = "payload.key"
DEV_KEY_ID = "dev"
"""The key id of the key `tidings dev` keeps in the data dir."""

_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
GENERATE_KEY = 'python3 -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'


class PayloadKeyError(TidingsError):
    """The payload keys are misconfigured, or a payload names a key that is not configured."""


class PayloadDecryptionError(TidingsError):
    """A payload's ciphertext does not authenticate: altered, or not made with this key."""


def generate_key() -> str:
    """A new random key, base64 (what `TIDINGS_PAYLOAD_KEYS` takes after `id:`)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


@dataclass(frozen=True)
class KeyRing:
    """The configured keys by id; `active` encrypts, every key decrypts."""

    active: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str, *, source: str = KEYS_VARIABLE) -> KeyRing:
        """`id:base64key,id2:base64key`; raises PayloadKeyError naming `source` and the fix."""
        keys: dict[str, bytes] = {}
        for item in (part.strip() for part in text.split(",")):
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID_PATTERN.fullmatch(key_id):
                raise PayloadKeyError(
                    f"{source}: expected `id:base64key` pairs separated by commas (an id is "
                    f"letters, digits, `.`, `_` or `-`), e.g. {source}=2026-01:<key>; "
                    f"make a key with: {GENERATE_KEY}"
                )
            if key_id in keys:
                raise PayloadKeyError(f"{source}: key id {key_id!r} is listed twice")
            keys[key_id] = _decode_key(key_id, encoded.strip(), source)
        return cls(active=next(iter(keys)), keys=keys)


def _decode_key(key_id: str, encoded: str, source: str) -> bytes:
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise PayloadKeyError(
            f"{source}: key {key_id!r} must be {KEY_BYTES} random bytes in base64 "
            f"(AES-256); make one with: {GENERATE_KEY}"
        )
    return key


def key_ring(settings: Settings) -> KeyRing | None:
    """The configured keys; else the key `tidings dev` keeps in the data dir, so the
    CLI next to it reads what its worker wrote; else None: payloads are not encrypted."""
    if settings.payload_keys.strip():
        return KeyRing.parse(settings.payload_keys)
    path = dev_key_path(settings.data_dir)
    if path.is_file():
        return KeyRing.parse(f"{DEV_KEY_ID}:{path.read_text().strip()}", source=str(path))
    return None


def dev_key_path(data_dir: Path) -> Path:
    return data_dir / DEV_KEY_FILE


def ensure_dev_key(data_dir: Path) -> Path:
    """Make the dev key once (readable by its owner only); later starts reuse it, so
    histories written by an earlier `tidings dev` still decode."""
    path = dev_key_path(data_dir)
    keep_secret_file(path, generate_key)
    return path


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the whole serialized payload, a fresh random nonce each time.

    The key id is bound to the ciphertext as associated data, so relabelling a
    payload with another id fails authentication rather than decrypting garbage.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.ring.active
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"a payload is encrypted with key id {key_id!r}, which {KEYS_VARIABLE} does "
                f"not list (it has {', '.join(self.ring.keys)}); add that key back: keys "
                "must stay as long as histories encrypted with them are kept"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"a payload encrypted with key id {key_id!r} does not authenticate: it was "
                "altered, or that id names a different key here than where it was written"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def encrypting_converter(ring: KeyRing) -> DataConverter:
    """Pydantic payloads, encrypted; failure messages and stack traces too (by
    default they stay in clear, and an error can quote a contact's data)."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter(settings: Settings) -> DataConverter:
    """What every client and worker of tidings converts payloads with."""
    ring = key_ring(settings)
    return pydantic_data_converter if ring is None else encrypting_converter(ring)
