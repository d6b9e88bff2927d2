"""Real-time content: HTTP GETs a template declares, done at send time.

Each lookup has a timeout and an optional cache lifetime; a failure (a
timeout, an error status, a body that is not JSON) leaves the lookup out,
and the renderer falls back to the template's fallback variant. Values put
into a lookup URL are percent-encoded, so data cannot change the host or
the path (`../admin`, `@evil.example`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import JsonValue

from tidings.content.spec import Lookup

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_CACHED = 10_000
"""Cached responses kept before expired ones are dropped (URLs may be per contact)."""


def _quoted(value: Any) -> str:
    if value is None:
        raise ValueError("a value in the lookup URL is missing")
    if str(value) in (".", ".."):
        # Percent-encoding leaves dots alone, and URL normalization would walk up.
        raise ValueError(f"{value!r} cannot be a URL path segment")
    return quote(str(value), safe="")


_URL_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_quoted)


def lookup_url(lookup: Lookup, data: dict[str, Any]) -> str:
    return _URL_ENV.from_string(lookup.url).render(data)


class LookupClient:
    """Performs lookups over one connection pool, with a per-URL cache of successes."""

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client or httpx.Client(follow_redirects=False)
        self._clock = clock
        self._cache: dict[str, tuple[float, JsonValue]] = {}
        self._lock = threading.Lock()

    def fetch(
        self, lookups: dict[str, Lookup], data: dict[str, Any]
    ) -> tuple[dict[str, JsonValue], list[str]]:
        """(results by name, one line per failed lookup)."""
        results: dict[str, JsonValue] = {}
        failures: list[str] = []
        for name, lookup in lookups.items():
            try:
                url = lookup_url(lookup, data)
            except Exception as err:  # a missing field in the URL, e.g.
                failures.append(f"lookup {name!r}: cannot build its URL: {err}")
                continue
            try:
                results[name] = self._get(url, lookup)
            except LookupFailed as err:
                failures.append(f"lookup {name!r}: {err}")
        for failure in failures:
            log.warning("lookup failed", detail=failure)
        return results, failures

    def _get(self, url: str, lookup: Lookup) -> JsonValue:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        value: JsonValue = json.loads(self._body(url, lookup.timeout.total_seconds()))
        if lookup.cache is not None:
            with self._lock:
                if len(self._cache) >= MAX_CACHED:
                    self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                self._cache[url] = (now + lookup.cache.total_seconds(), value)
        return value

    def _body(self, url: str, timeout: float) -> bytes:
        """The JSON response body, within `timeout` in all (httpx's timeout is per
        read: a server trickling bytes would otherwise hold the send for long)."""
        deadline = time.monotonic() + timeout
        late = f"{_host(url)} did not answer within {timeout:g}s"
        chunks: list[bytes] = []
        size = 0
        try:
            with self._client.stream(
                "GET", url, timeout=timeout, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise LookupFailed(f"{_host(url)} answered HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise LookupFailed(
                            f"{_host(url)} answered more than {MAX_BODY_BYTES} bytes"
                        )
                    if time.monotonic() > deadline:
                        raise LookupFailed(late)
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise LookupFailed(late) from None
        except httpx.HTTPError as err:
            raise LookupFailed(f"{_host(url)} failed: {type(err).__name__}: {err}") from None
        body = b"".join(chunks)
        try:
            json.loads(body)
        except ValueError:
            raise LookupFailed(f"{_host(url)} answered something that is not JSON") from None
        return body

    def close(self) -> None:
        self._client.close()


class LookupFailed(Exception):
    pass


def _host(url: str) -> str:
    """The service, not the full URL: a path may carry a contact's data."""
    return httpx.URL(url).host or url
