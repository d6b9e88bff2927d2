"""Write keys of the HTTP event API, and each key's rate limit.

Configured as `TIDINGS_WRITE_KEYS=name:key[:rate],...`: the name is what the
queue, logs and listings show (the key itself is never logged or stored); the
rate is messages per second, `TIDINGS_INGEST_RATE_LIMIT` by default.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tidings.errors import TidingsError
from tidings.settings import keep_secret_file

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}")
MIN_KEY_LENGTH = 16
DEV_KEY_FILE = "dev-write-key"


@dataclass(frozen=True)
class WriteKey:
    name: str
    key: str = field(repr=False)
    rate: float
    """Messages per second; 0 is unlimited."""


def parse_write_keys(text: str, *, default_rate: float) -> list[WriteKey]:
    """`name:key[:rate]` entries separated by commas; every mistake is one error naming it."""
    keys: list[WriteKey] = []
    for number, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        parts = entry.split(":")
        where = f"TIDINGS_WRITE_KEYS entry {number} ({parts[0]!r})"
        if len(parts) not in (2, 3):
            raise TidingsError(f"{where}: write it as name:key or name:key:rate")
        name, key = parts[0], parts[1]
        if not _NAME.fullmatch(name):
            raise TidingsError(f"{where}: the name must be 1-24 lowercase letters, digits, _ or -")
        if len(key) < MIN_KEY_LENGTH:
            raise TidingsError(
                f"{where}: the key is shorter than {MIN_KEY_LENGTH} characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
            )
        rate = default_rate
        if len(parts) == 3:
            try:
                rate = float(parts[2])
            except ValueError:
                rate = -1
            if not rate >= 0 or math.isinf(rate):
                raise TidingsError(
                    f"{where}: the rate must be messages per second (0 for no limit)"
                )
        if any(k.name == name for k in keys):
            raise TidingsError(f"{where}: the name is used twice; give each key its own")
        if any(k.key == key for k in keys):
            raise TidingsError(f"{where}: the key is used twice; give each name its own")
        keys.append(WriteKey(name, key, rate))
    return keys


def dev_write_key(data_dir: Path) -> str:
    """The `dev` write key `tidings dev` makes once and keeps in the data dir."""
    path = data_dir / DEV_KEY_FILE
    keep_secret_file(path, lambda: "dev_" + secrets.token_urlsafe(18))
    return path.read_text().strip()


def basic_auth_user(header: str | None) -> str | None:
    """The username of an HTTP Basic `Authorization` header (Segment sends the write
    key there, with an empty password), or None if the header is not one."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


class WriteKeys:
    """The configured keys; looks a presented key up in constant time per key."""

    def __init__(self, keys: list[WriteKey]) -> None:
        self.keys = keys

    def find(self, presented: str) -> WriteKey | None:
        found = None
        for key in self.keys:
            # Every key is compared (no early return), so timing tells nothing.
            if hmac.compare_digest(key.key.encode(), presented.encode()):
                found = key
        return found


class RateLimits:
    """A token bucket per write key, holding one second of its rate.

    A request costs its number of messages. One bigger than the bucket (a
    500-message batch at 100/s) is let through when the bucket is full and
    leaves it in debt, so the rate holds over time without refusing such a
    batch forever.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: WriteKey, cost: int) -> float:
        """0 when `cost` messages may go now (and takes them), else seconds to wait."""
        if key.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get(key.name, (key.rate, now))
        tokens = min(key.rate, tokens + (now - then) * key.rate)
        needed = min(cost, key.rate)
        if tokens < needed:
            self._buckets[key.name] = (tokens, now)
            return (needed - tokens) / key.rate
        self._buckets[key.name] = (tokens - cost, now)
        return 0.0
