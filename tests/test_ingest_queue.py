"""The ingest queue on SQLite and PostgreSQL: once per messageId, in order per stream."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tidings.db import ingest_queue
from tidings.db.engine import Database
from tidings.db.ingest_queue import NewMessage, Retry
from tidings.errors import InputError, TidingsError
from tidings.starter.write_keys import RateLimits, WriteKey, basic_auth_user, parse_write_keys

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


def message(message_id: str, stream: str = "user:u-1") -> NewMessage:
    return NewMessage(message_id, "track", stream, {"kind": "track", "id": message_id})


def enqueue(database: Database, *messages: NewMessage, key: str = "web") -> int:
    with database.session() as session:
        return ingest_queue.enqueue(session=session, write_key=key, messages=messages, now=NOW)


def ready(database: Database, now: datetime = NOW) -> list[str]:
    with database.session() as session:
        found = ingest_queue.ready(session=session, now=now, limit=100)
    return [m.payload["id"] for m in found]


def test_a_message_id_is_queued_once_per_write_key(database: Database) -> None:
    assert enqueue(database, message("m-1"), message("m-2"), message("m-1")) == 2
    assert enqueue(database, message("m-2"), message("m-3")) == 1
    assert enqueue(database, message("m-1"), key="mobile") == 1  # another sender's id
    assert ready(database) == ["m-1", "m-2", "m-3", "m-1"]


def test_a_failed_message_holds_back_its_stream_only(database: Database) -> None:
    enqueue(database, message("a-1", "user:a"), message("b-1", "user:b"), message("a-2", "user:a"))
    with database.session() as session:
        first = {
            m.payload["id"]: m.id for m in ingest_queue.ready(session=session, now=NOW, limit=9)
        }
        ingest_queue.record_outcomes(
            session=session,
            routed=[first["b-1"]],
            dead={},
            retry={
                first["a-1"]: Retry("RuntimeError: Temporal is down", NOW + timedelta(seconds=2))
            },
            now=NOW,
        )
    assert ready(database) == []  # a-2 waits behind a-1, b-1 is done
    assert ready(database, NOW + timedelta(seconds=2)) == ["a-1", "a-2"]
    with database.session() as session:
        counts = ingest_queue.counts(session=session)
        pending = ingest_queue.listing(session=session, state="pending", limit=9)
    assert counts == {"pending": 2, "routed": 1, "dead": 0}
    assert [(m.message_id, m.attempts, m.last_error) for m in pending] == [
        ("a-2", 0, None),
        ("a-1", 1, "RuntimeError: Temporal is down"),
    ]


def test_dead_messages_are_listed_and_can_be_queued_again(database: Database) -> None:
    enqueue(database, message("m-1"), message("m-2"))
    with database.session() as session:
        ids = [m.id for m in ingest_queue.ready(session=session, now=NOW, limit=9)]
        ingest_queue.record_outcomes(
            session=session,
            routed=[ids[1]],
            dead={ids[0]: "event 'signed_up' is malformed: property 'plan' must be a string"},
            retry={},
            now=NOW,
        )
    with database.session() as session:
        (dead,) = ingest_queue.listing(session=session, state="dead", limit=10)
    assert (dead.message_id, dead.attempts) == ("m-1", 1)
    assert dead.last_error is not None and "'plan' must be a string" in dead.last_error
    with (
        pytest.raises(InputError, match=f"message {ids[1]}: not dead"),
        database.session() as session,
    ):
        ingest_queue.requeue_dead(session=session, ids=[ids[0], ids[1]], now=NOW)
    assert ready(database) == []  # the refused retry changed nothing
    with database.session() as session:
        assert ingest_queue.requeue_dead(session=session, ids=[ids[0]], now=NOW) == 1
    assert ready(database) == ["m-1"]


def test_write_keys_are_parsed_with_one_clear_error_each() -> None:
    keys = parse_write_keys("web:k" + "1" * 20 + ", mobile:k" + "2" * 20 + ":50", default_rate=9)
    assert [(k.name, k.rate) for k in keys] == [("web", 9), ("mobile", 50)]
    assert "k111" not in repr(keys)  # the key itself never shows in logs or tracebacks
    for text, names in [
        ("web", "write it as name:key"),
        ("Web:" + "k" * 20, "the name must be"),
        ("web:short", "shorter than 16"),
        ("web:" + "k" * 20 + ":fast", "the rate must be"),
        ("web:" + "k" * 20 + ",web:" + "j" * 20, "the name is used twice"),
    ]:
        with pytest.raises(TidingsError, match=names):
            parse_write_keys(text, default_rate=1)


def test_basic_auth_gives_the_write_key() -> None:
    assert basic_auth_user("Basic d2stMTIzOg==") == "wk-123"  # "wk-123:"
    assert basic_auth_user("Basic !!") is None
    assert basic_auth_user("Bearer wk-123") is None
    assert basic_auth_user(None) is None


def test_the_rate_limit_lets_a_big_batch_through_into_debt() -> None:
    now = [0.0]
    limits = RateLimits(clock=lambda: now[0])
    key = WriteKey("web", "k" * 20, rate=100)
    assert limits.take(key, 500) == 0  # bigger than a second's worth: allowed when full
    assert limits.take(key, 1) == pytest.approx(4.01)  # 400 in debt, then one
    now[0] = 4.02
    assert limits.take(key, 1) == 0
    assert limits.take(WriteKey("free", "k" * 20, rate=0), 10**6) == 0
