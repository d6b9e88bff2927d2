"""The in-app inbox: the database layer, the provider, the HTTP API and the CLI.

Everything runs on SQLite and on the real PostgreSQL server; the HTTP API is
served by uvicorn on a real port and called with httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import typer
from fastapi import FastAPI
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import event, text
from sqlmodel import func, select
from typer.testing import CliRunner, Result

from tidings.activities.channels import OutgoingMessage, PermanentSendError, TransientSendError
from tidings.activities.channels.inbox import InboxProvider
from tidings.content.unsubscribe import make_token
from tidings.db import deliveries, inbox
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.models.tables import InboxMessage
from tidings.settings import Settings
from tidings.starter.cli_inbox import register
from tidings.starter.inbox_admin import (
    TOKEN_SALT,
    InboxAdmin,
    inbox_token,
    read_inbox_token,
)
from tidings.starter.inbox_http import inbox_router
from tidings.starter.ports import free_port
from tidings.starter.service import running_service

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
SECRET = "test-secret-key"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def put(
    db: Database,
    key: str,
    delivery_id: str,
    *,
    now: datetime = NOW,
    title: str = "Hello",
    expires_at: datetime | None = None,
) -> str:
    with db.session() as session:
        message = inbox.deliver(
            session=session,
            contact_key=key,
            delivery_id=delivery_id,
            title=title,
            body=f"body of {delivery_id}",
            action="https://app.example/orders/1",
            journey="onboarding",
            template="welcome-in-app",
            now=now,
            expires_at=expires_at,
        )
        return message.id


def rows(db: Database) -> int:
    with db.session() as session:
        return int(session.exec(select(func.count()).select_from(InboxMessage)).one())


def listed(db: Database, key: str, now: datetime = NOW, **options: bool) -> list[str]:
    with db.session() as session:
        found = inbox.list_for(session=session, contact_key=key, now=now, **options)
    return [message.delivery_id for message in found]


def unread(db: Database, key: str, now: datetime = NOW) -> int:
    with db.session() as session:
        return inbox.unread_count(session=session, contact_key=key, now=now)


# The database layer


def test_a_second_deliver_with_the_same_delivery_id_returns_the_first_row(db: Database) -> None:
    first = put(db, "c1", "d1")
    again = put(db, "c1", "d1", title="A changed title", now=NOW + timedelta(minutes=5))

    assert again == first
    assert rows(db) == 1
    with db.session() as session:
        stored = session.get(InboxMessage, first)
    assert stored is not None
    assert (stored.title, stored.created_at) == ("Hello", NOW)


def test_a_delivery_id_already_in_another_contacts_inbox_is_refused(db: Database) -> None:
    put(db, "c1", "d1")
    with pytest.raises(InputError, match="delivery 'd1' is already in another contact's inbox"):
        put(db, "c2", "d1")
    assert listed(db, "c2") == []


def test_the_list_is_newest_first_and_expired_messages_are_hidden(db: Database) -> None:
    put(db, "c1", "old", now=NOW)
    put(
        db, "c1", "short-lived", now=NOW + timedelta(minutes=1), expires_at=NOW + timedelta(hours=1)
    )
    put(db, "c1", "new", now=NOW + timedelta(minutes=2))
    put(db, "c2", "someone-else", now=NOW + timedelta(minutes=3))

    assert listed(db, "c1", NOW + timedelta(minutes=30)) == ["new", "short-lived", "old"]
    later = NOW + timedelta(hours=1)  # expiry is exclusive: at expires_at it is gone
    assert listed(db, "c1", later) == ["new", "old"]
    assert unread(db, "c1", NOW + timedelta(minutes=30)) == 3
    assert unread(db, "c1", later) == 2
    with db.session() as session:
        two = inbox.list_for(session=session, contact_key="c1", now=later, limit=1)
    assert [m.delivery_id for m in two] == ["new"]


def test_reading_and_archiving_change_the_list_and_the_unread_count(db: Database) -> None:
    first = put(db, "c1", "d1", now=NOW)
    second = put(db, "c1", "d2", now=NOW + timedelta(minutes=1))
    third = put(db, "c1", "d3", now=NOW + timedelta(minutes=2))
    assert unread(db, "c1") == 3

    with db.session() as session:
        inbox.mark_read(session=session, contact_key="c1", message_id=first, now=NOW)
    with db.session() as session:  # reading again keeps the first time
        again = inbox.mark_read(
            session=session, contact_key="c1", message_id=first, now=NOW + timedelta(hours=1)
        )
    assert again.read_at == NOW
    assert unread(db, "c1") == 2
    assert listed(db, "c1", unread_only=True) == ["d3", "d2"]

    with db.session() as session:
        archived = inbox.archive(session=session, contact_key="c1", message_id=third, now=NOW)
    assert archived.archived_at == NOW and archived.read_at is None
    assert listed(db, "c1") == ["d2", "d1"]
    assert listed(db, "c1", include_archived=True) == ["d3", "d2", "d1"]
    assert unread(db, "c1") == 1  # an archived message is not on the badge

    with db.session() as session:
        assert inbox.mark_all_read(session=session, contact_key="c1", now=NOW) == 1
    with db.session() as session:
        assert inbox.mark_all_read(session=session, contact_key="c1", now=NOW) == 0
    assert unread(db, "c1") == 0
    with db.session() as session:
        stored = session.get(InboxMessage, second)
    assert stored is not None and stored.read_at == NOW


def test_another_contacts_message_is_refused_exactly_like_an_unknown_id(db: Database) -> None:
    theirs = put(db, "c1", "d1")

    with db.session() as session, pytest.raises(inbox.UnknownInboxMessageError) as other:
        inbox.mark_read(session=session, contact_key="c2", message_id=theirs, now=NOW)
    with db.session() as session, pytest.raises(inbox.UnknownInboxMessageError) as unknown:
        inbox.archive(session=session, contact_key="c2", message_id="0" * 32, now=NOW)
    with db.session() as session, pytest.raises(inbox.UnknownInboxMessageError):
        inbox.archive(session=session, contact_key="c2", message_id="x" * 300, now=NOW)

    assert str(other.value) == str(unknown.value).replace("0" * 32, theirs)
    assert repr(theirs) in str(other.value)
    assert isinstance(other.value, InputError)
    assert unread(db, "c1") == 1 and listed(db, "c1") == ["d1"]


def test_a_refused_message_or_a_failing_transaction_leaves_nothing_half_written(
    db: Database,
) -> None:
    with db.session() as session, pytest.raises(InputError) as err:
        inbox.deliver(
            session=session,
            contact_key="c1",
            delivery_id="d1",
            title="  ",
            body="",
            action="javascript:alert(1)",
            journey="j",
            template="t",
            now=NOW,
            expires_at=NOW - timedelta(seconds=1),
        )
    assert "title: required" in str(err.value)
    assert "action: javascript:" in str(err.value)
    assert "expires_at: must be later" in str(err.value)
    assert rows(db) == 0

    good = put(db, "c1", "d1")
    with pytest.raises(inbox.UnknownInboxMessageError), db.session() as session:
        inbox.mark_read(session=session, contact_key="c1", message_id=good, now=NOW)
        inbox.archive(session=session, contact_key="c1", message_id="missing", now=NOW)
    assert unread(db, "c1") == 1  # the read in the failed transaction was rolled back


@pytest.mark.parametrize(
    ("action", "ok"),
    [
        ("https://app.example/a?b=c", True),
        ("myapp://orders/7", True),
        ("/settings/billing", True),
        ("DATA:text/html,<script>", False),
        ("orders/7", False),
        ("https://app.example/a b", False),
    ],
)
def test_only_links_an_app_can_safely_follow_are_accepted_as_action(
    db: Database, action: str, ok: bool
) -> None:
    def deliver() -> None:
        with db.session() as session:
            inbox.deliver(
                session=session,
                contact_key="c1",
                delivery_id="d1",
                title="t",
                body="b",
                action=action,
                journey="j",
                template="t",
                now=NOW,
                expires_at=None,
            )

    if ok:
        deliver()
        assert rows(db) == 1
    else:
        with pytest.raises(InputError, match="invalid inbox message: action: "):
            deliver()
        assert rows(db) == 0


def test_a_limit_out_of_range_is_refused(db: Database) -> None:
    with db.session() as session, pytest.raises(InputError, match="limit 0: choose between 1"):
        inbox.list_for(session=session, contact_key="c1", now=NOW, limit=0)


def test_an_unarchived_message_is_back_in_the_list_and_the_unread_count(db: Database) -> None:
    first = put(db, "c1", "d1", now=NOW)
    put(db, "c1", "d2", now=NOW + timedelta(minutes=1))
    with db.session() as session:
        inbox.archive(session=session, contact_key="c1", message_id=first, now=NOW)
    assert listed(db, "c1") == ["d2"]
    assert listed(db, "c1", archived_only=True) == ["d1"]
    assert unread(db, "c1") == 1

    with db.session() as session:
        back = inbox.unarchive(session=session, contact_key="c1", message_id=first)
    assert back.archived_at is None and back.read_at is None
    with db.session() as session:  # again is fine: nothing changes
        again = inbox.unarchive(session=session, contact_key="c1", message_id=first)
    assert again.archived_at is None
    assert listed(db, "c1") == ["d2", "d1"]
    assert listed(db, "c1", archived_only=True) == []
    assert unread(db, "c1") == 2


def test_the_archived_list_holds_only_live_archived_messages_of_the_contact(db: Database) -> None:
    kept = put(db, "c1", "kept", now=NOW)
    put(db, "c1", "inbox", now=NOW + timedelta(minutes=1))
    old = put(db, "c1", "old", now=NOW + timedelta(minutes=2))
    short = put(
        db, "c1", "short", now=NOW - timedelta(minutes=1), expires_at=NOW + timedelta(hours=1)
    )
    theirs = put(db, "c2", "theirs", now=NOW + timedelta(minutes=3))
    with db.session() as session:
        for key, message in (("c1", kept), ("c1", old), ("c1", short), ("c2", theirs)):
            inbox.archive(session=session, contact_key=key, message_id=message, now=NOW)
        inbox.mark_read(session=session, contact_key="c1", message_id=old, now=NOW)

    assert listed(db, "c1", archived_only=True) == ["old", "kept", "short"]
    assert listed(db, "c1", archived_only=True, unread_only=True) == ["kept", "short"]
    # archived_only needs no include_archived, and is not widened by it
    assert listed(db, "c1", archived_only=True, include_archived=True) == ["old", "kept", "short"]
    later = NOW + timedelta(hours=1)
    assert listed(db, "c1", later, archived_only=True) == ["old", "kept"]


def test_unarchiving_another_contacts_message_is_refused_like_an_unknown_id(
    db: Database,
) -> None:
    theirs = put(db, "c1", "d1")
    with db.session() as session:
        inbox.archive(session=session, contact_key="c1", message_id=theirs, now=NOW)

    with db.session() as session, pytest.raises(inbox.UnknownInboxMessageError) as other:
        inbox.unarchive(session=session, contact_key="c2", message_id=theirs)
    with db.session() as session, pytest.raises(inbox.UnknownInboxMessageError) as unknown:
        inbox.unarchive(session=session, contact_key="c2", message_id="0" * 32)

    assert str(other.value) == str(unknown.value).replace("0" * 32, theirs)
    assert listed(db, "c1", archived_only=True) == ["d1"]


def test_purge_deletes_only_messages_expired_for_longer_than_the_grace_period(
    db: Database,
) -> None:
    created = NOW - timedelta(days=100)
    put(db, "c1", "long-expired", now=created, expires_at=NOW - timedelta(days=31))
    put(db, "c2", "long-expired-2", now=created, expires_at=NOW - timedelta(days=45))
    put(db, "c1", "just-inside-grace", now=created, expires_at=NOW - timedelta(days=30))
    put(db, "c1", "recently-expired", now=created, expires_at=NOW - timedelta(days=1))
    put(db, "c1", "not-expired", now=created, expires_at=NOW + timedelta(days=1))
    put(db, "c1", "no-expiry", now=created)

    with db.session() as session:
        assert inbox.purge_expired(session=session, now=NOW) == 2

    with db.session() as session:
        left = session.exec(select(InboxMessage.delivery_id)).all()
    assert sorted(left) == ["just-inside-grace", "no-expiry", "not-expired", "recently-expired"]
    with db.session() as session:  # nothing more to do
        assert inbox.purge_expired(session=session, now=NOW) == 0
    with db.session() as session:  # no grace: every expired message goes
        assert inbox.purge_expired(session=session, now=NOW, older_than=timedelta(0)) == 2
    assert rows(db) == 2


def test_purge_deletes_in_batches_until_nothing_is_left(db: Database) -> None:
    expired = NOW - timedelta(days=40)
    for number in range(7):
        put(
            db,
            f"c{number % 3}",
            f"old-{number}",
            now=expired - timedelta(days=1),
            expires_at=expired,
        )
    put(db, "c1", "kept", now=NOW)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.session() as session:
            purged = inbox.purge_expired(session=session, now=NOW, batch_size=3)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)

    assert purged == 7
    assert len(statements) == 3  # 3 + 3 + 1: the short batch is the last
    assert rows(db) == 1 and listed(db, "c1") == ["kept"]


def test_purge_refuses_a_negative_grace_period_or_an_empty_batch(db: Database) -> None:
    put(db, "c1", "d1", now=NOW - timedelta(days=90), expires_at=NOW - timedelta(days=60))
    with db.session() as session, pytest.raises(InputError, match="cannot be negative"):
        inbox.purge_expired(session=session, now=NOW, older_than=timedelta(days=-1))
    with db.session() as session, pytest.raises(InputError, match="batch_size 0"):
        inbox.purge_expired(session=session, now=NOW, batch_size=0)
    assert rows(db) == 1


# The provider


def outgoing(delivery_id: str, **parts: str) -> OutgoingMessage:
    return OutgoingMessage(
        channel="in_app",
        to="",
        contact_key="c1",
        parts=parts or {"title": "Your order shipped", "body": "It is on its way."},
        delivery_id=delivery_id,
    )


def test_sending_twice_with_one_delivery_id_stores_one_message_and_returns_its_id(
    db: Database,
) -> None:
    with db.session() as session:
        delivery = deliveries.record(
            session=session,
            new=deliveries.NewDelivery(
                idempotency_key="wf/1/step/1",
                contact_key="c1",
                journey="orders",
                step_id="shipped",
                channel="in_app",
                template="order-shipped",
                purpose="transactional",
                topic=None,
                scheduled_at=NOW,
            ),
            status=deliveries.SENDING,
            error="",
            now=NOW,
        )
    provider = InboxProvider(db, timedelta(days=7), clock=lambda: NOW)
    message = outgoing(delivery.id, title="Shipped", body="On its way", action="myapp://o/1")

    first = provider.send(message)
    second = provider.send(message)

    assert first == second
    assert rows(db) == 1
    with db.session() as session:
        stored = session.get(InboxMessage, first)
    assert stored is not None
    assert (stored.contact_key, stored.delivery_id) == ("c1", delivery.id)
    assert (stored.title, stored.body, stored.action) == ("Shipped", "On its way", "myapp://o/1")
    assert (stored.journey, stored.template) == ("orders", "order-shipped")
    assert (stored.created_at, stored.expires_at) == (NOW, NOW + timedelta(days=7))


def test_a_message_without_a_title_fails_for_good_and_stores_nothing(db: Database) -> None:
    provider = InboxProvider(db)
    with pytest.raises(PermanentSendError, match="title: required"):
        provider.send(outgoing("d1", body="no title"))
    with pytest.raises(PermanentSendError, match="sends in_app messages, not 'sms'"):
        provider.send(outgoing("d2").model_copy(update={"channel": "sms"}))
    assert rows(db) == 0


def test_a_database_error_is_transient_and_does_not_quote_the_message(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE inbox_messages"))
    provider = InboxProvider(db)

    with pytest.raises(TransientSendError) as err:
        provider.send(outgoing("d1", title="Secret title", body="Private body"))

    assert "did not store the in-app message" in str(err.value)
    assert "Secret" not in str(err.value) and "Private" not in str(err.value)


def test_the_default_time_to_live_is_90_days(db: Database) -> None:
    sent = InboxProvider(db, clock=lambda: NOW).send(outgoing("d1"))
    with db.session() as session:
        stored = session.get(InboxMessage, sent)
    assert stored is not None and stored.expires_at == NOW + timedelta(days=90)
    assert (stored.journey, stored.template, stored.action) == ("", "", None)


# Tokens


def backdated_token(secret: str, key: str, age: timedelta) -> str:
    """A token as `inbox_token` would have made it `age` ago."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age.total_seconds())

    return str(URLSafeTimedSerializer(secret, salt=TOKEN_SALT, signer=Backdated).dumps(key))


def test_tokens_name_the_contact_and_expire_after_30_days() -> None:
    assert read_inbox_token(SECRET, inbox_token(SECRET, "c1")) == "c1"
    assert read_inbox_token(SECRET, backdated_token(SECRET, "c1", timedelta(days=29))) == "c1"
    assert read_inbox_token(SECRET, backdated_token(SECRET, "c1", timedelta(days=31))) is None
    short = timedelta(hours=1)
    assert (
        read_inbox_token(SECRET, backdated_token(SECRET, "c1", timedelta(hours=2)), max_age=short)
        is None
    )
    assert read_inbox_token("another-secret", inbox_token(SECRET, "c1")) is None
    unsubscribe = make_token(SECRET, contact_key="c1", topic="cart", template="t")
    assert read_inbox_token(SECRET, unsubscribe) is None


# The HTTP API, over real HTTP


@pytest.fixture
async def service(db: Database) -> AsyncIterator[str]:
    app = FastAPI()
    app.include_router(inbox_router(db, SECRET))
    async with running_service(app, host="127.0.0.1", port=free_port()) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {inbox_token(SECRET, key)}"}


async def test_the_app_lists_reads_and_archives_its_messages(db: Database, service: str) -> None:
    now = datetime.now(UTC)
    first = put(db, "c1", "d1", now=now - timedelta(minutes=2), title="First")
    second = put(db, "c1", "d2", now=now - timedelta(minutes=1), title="Second")
    put(db, "c1", "d3", now=now - timedelta(minutes=3))
    put(db, "c1", "gone", now=now - timedelta(minutes=9), expires_at=now - timedelta(minutes=1))
    put(db, "c2", "d4", now=now, title="Not yours")

    async with httpx.AsyncClient(base_url=service, headers=bearer("c1")) as http:
        page = await http.get("/inbox")
        assert page.status_code == 200, page.text
        assert page.headers["cache-control"] == "no-store"
        body = page.json()
        assert [m["title"] for m in body["messages"]] == ["Second", "First", "Hello"]
        assert body["unread"] == 3
        assert set(body["messages"][0]) == {
            "id", "title", "body", "action", "created_at", "read_at", "archived_at", "expires_at"
        }  # fmt: skip

        read = await http.post(f"/inbox/{first}/read")
        assert read.status_code == 200 and read.json()["read_at"] is not None
        unread_page = (await http.get("/inbox", params={"unread_only": "true"})).json()
        assert [m["title"] for m in unread_page["messages"]] == ["Second", "Hello"]
        assert unread_page["unread"] == 2

        archived = await http.post(f"/inbox/{second}/archive")
        assert archived.status_code == 200 and archived.json()["archived_at"] is not None
        after = (await http.get("/inbox")).json()
        assert [m["title"] for m in after["messages"]] == ["First", "Hello"]
        assert after["unread"] == 1
        everything = (await http.get("/inbox", params={"include_archived": "true"})).json()
        assert [m["title"] for m in everything["messages"]] == ["Second", "First", "Hello"]

        cleared = await http.post("/inbox/read-all")
        assert cleared.json() == {"marked_read": 1, "unread": 0}

    assert unread(db, "c2", now) == 1  # the other contact's inbox is untouched


async def test_the_app_lists_its_archived_messages_and_unarchives_one(
    db: Database, service: str
) -> None:
    now = datetime.now(UTC)
    first = put(db, "c1", "d1", now=now - timedelta(minutes=2), title="First")
    put(db, "c1", "d2", now=now - timedelta(minutes=1), title="Second")
    theirs = put(db, "c2", "d3", now=now, title="Not yours")

    async with httpx.AsyncClient(base_url=service, headers=bearer("c1")) as http:
        await http.post(f"/inbox/{first}/archive")
        archived = (await http.get("/inbox", params={"archived_only": "true"})).json()
        assert [m["title"] for m in archived["messages"]] == ["First"]
        assert archived["unread"] == 1

        back = await http.post(f"/inbox/{first}/unarchive")
        assert back.status_code == 200, back.text
        assert back.json()["archived_at"] is None
        again = await http.post(f"/inbox/{first}/unarchive")
        assert again.status_code == 200 and again.json() == back.json()
        page = (await http.get("/inbox")).json()
        assert [m["title"] for m in page["messages"]] == ["Second", "First"]
        assert page["unread"] == 2
        assert (await http.get("/inbox", params={"archived_only": "true"})).json()["messages"] == []

        other = await http.post(f"/inbox/{theirs}/unarchive")
        unknown = await http.post(f"/inbox/{'0' * 32}/unarchive")
    assert (other.status_code, unknown.status_code) == (404, 404)
    assert other.json()["detail"] == unknown.json()["detail"].replace("0" * 32, theirs)


async def test_another_contacts_message_is_404(db: Database, service: str) -> None:
    theirs = put(db, "c1", "d1", now=datetime.now(UTC))
    async with httpx.AsyncClient(base_url=service, headers=bearer("c2")) as http:
        read = await http.post(f"/inbox/{theirs}/read")
        archived = await http.post(f"/inbox/{theirs}/archive")
        listing = await http.get("/inbox")

    assert (read.status_code, archived.status_code) == (404, 404)
    assert set(read.json()) == {"detail"}
    assert f"there is no inbox message {theirs!r}" in read.json()["detail"]
    assert listing.json() == {"messages": [], "unread": 0}
    with db.session() as session:
        stored = session.get(InboxMessage, theirs)
    assert stored is not None and stored.read_at is None and stored.archived_at is None


@pytest.mark.parametrize(
    ("headers", "detail", "challenge"),
    [
        ({}, "no inbox token", "Bearer"),
        ({"Authorization": "Basic YWxhZGRpbjpvcGVu"}, "is not a bearer token", "Bearer"),
        (
            {"Authorization": f"Bearer {inbox_token('another-secret', 'c1')}"},
            "the inbox token is not valid",
            'Bearer error="invalid_token"',
        ),
        (
            {"Authorization": f"Bearer {inbox_token(SECRET, 'c1')[:-3]}"},
            "the inbox token is not valid",
            'Bearer error="invalid_token"',
        ),
        (
            {"Authorization": f"Bearer {backdated_token(SECRET, 'c1', timedelta(days=31))}"},
            "the inbox token has expired",
            'Bearer error="invalid_token"',
        ),
    ],
    ids=["missing", "basic", "forged", "cut-short", "expired"],
)
async def test_a_missing_bad_or_expired_token_is_401_saying_which(
    db: Database, service: str, headers: dict[str, str], detail: str, challenge: str
) -> None:
    message = put(db, "c1", "d1", now=datetime.now(UTC))
    async with httpx.AsyncClient(base_url=service, headers=headers) as http:
        answers = [
            await http.get("/inbox"),
            await http.post(f"/inbox/{message}/read"),
            await http.post("/inbox/read-all"),
        ]

    for answer in answers:
        assert answer.status_code == 401
        assert detail in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == challenge
    assert unread(db, "c1", datetime.now(UTC)) == 1


async def test_the_openapi_document_describes_the_inbox_responses(service: str) -> None:
    async with httpx.AsyncClient(base_url=service) as http:
        document = (await http.get("/openapi.json")).json()

    schemas = document["components"]["schemas"]
    assert {"InboxPage", "InboxMessageOut", "ReadAllResult", "ErrorOut"} <= set(schemas)
    listing = document["paths"]["/inbox"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InboxPage"
    }
    assert "401" in listing["responses"]
    assert "404" in document["paths"]["/inbox/{message_id}/read"]["post"]["responses"]


async def test_the_admin_sees_journey_and_template(db: Database) -> None:
    put(db, "c1", "d1", now=datetime.now(UTC))
    admin = InboxAdmin(db)

    [entry] = await admin.list("c1")
    assert (entry.journey, entry.template, entry.unread) == ("onboarding", "welcome-in-app", True)
    assert await admin.unread_count("c1") == 1
    assert (await admin.archive("c1", entry.id)).archived_at is not None
    assert await admin.list("c1") == []
    assert [e.id for e in await admin.list("c1", include_archived=True)] == [entry.id]
    assert [e.id for e in await admin.list("c1", archived_only=True)] == [entry.id]
    with pytest.raises(inbox.UnknownInboxMessageError):
        await admin.mark_read("c2", entry.id)
    with pytest.raises(inbox.UnknownInboxMessageError):
        await admin.unarchive("c2", entry.id)
    assert (await admin.unarchive("c1", entry.id)).archived_at is None
    assert [e.id for e in await admin.list("c1")] == [entry.id]


async def test_the_admin_purges_expired_messages_of_every_contact(db: Database) -> None:
    now = datetime.now(UTC)
    put(db, "c1", "old", now=now - timedelta(days=60), expires_at=now - timedelta(days=40))
    put(db, "c2", "older", now=now - timedelta(days=90), expires_at=now - timedelta(days=80))
    put(db, "c2", "recent", now=now - timedelta(days=9), expires_at=now - timedelta(days=5))
    admin = InboxAdmin(db)

    assert await admin.purge_expired(batch_size=1) == 2
    assert await admin.purge_expired(older_than=timedelta(days=1)) == 1
    assert rows(db) == 0


# The CLI


class Cli:
    """`tidings inbox ...` on the test's database, through an app of the test's own."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.app = typer.Typer()
        register(self.app)
        self.data_dir = data_dir
        self.env = {"TIDINGS_DATABASE_URL": database_url, "TIDINGS_SECRET_KEY": ""}

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(
            self.app, ["inbox", *args, "--data-dir", str(self.data_dir)], env=self.env
        )


@pytest.fixture
def cli(db: Database, database_url: str, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path / "data")


def test_the_cli_lists_reads_and_archives(db: Database, cli: Cli) -> None:
    now = datetime.now(UTC)
    first = put(db, "c1", "d1", now=now - timedelta(minutes=2), title="First")
    second = put(db, "c1", "d2", now=now - timedelta(minutes=1), title="Second")
    put(db, "c1", "d3", now=now, title="Third")

    listing = cli("list", "c1")
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[0] == "c1: 3 unread"
    assert [line.split()[-1] for line in lines[1:]] == ["Third", "Second", "First"]
    assert all(line.lstrip().startswith("*") for line in lines[1:])

    assert cli("read", "c1", first).output == f"{first} read\n"
    assert cli("archive", "c1", second).output == f"{second} archived\n"
    unread_only = cli("list", "c1", "--unread", "--json")
    shown = json.loads(unread_only.output)
    assert shown["unread"] == 1
    assert [m["title"] for m in shown["messages"]] == ["Third"]
    assert shown["messages"][0]["journey"] == "onboarding"
    everything = json.loads(cli("list", "c1", "--all", "--json").output)
    assert [m["title"] for m in everything["messages"]] == ["Third", "Second", "First"]

    assert cli("read", "c1", "--all").output == "1 message marked read\n"
    assert cli("list", "c1").output.splitlines()[0] == "c1: 0 unread"
    assert unread(db, "c1", now) == 0


def test_the_cli_refuses_unclear_or_unknown_messages_with_one_line(db: Database, cli: Cli) -> None:
    mine = put(db, "c1", "d1", now=datetime.now(UTC))

    neither = cli("read", "c1")
    both = cli("read", "c1", mine, "--all")
    theirs = cli("archive", "c2", mine)

    assert (neither.exit_code, both.exit_code, theirs.exit_code) == (1, 1, 1)
    assert (
        neither.output
        == both.output
        == ("error: name one message ID, or --all for every unread message (not both)\n")
    )
    assert theirs.output.startswith(f"error: there is no inbox message {mine!r} for this contact")
    assert unread(db, "c1", datetime.now(UTC)) == 1


def test_the_cli_lists_archived_messages_and_unarchives_one(db: Database, cli: Cli) -> None:
    now = datetime.now(UTC)
    first = put(db, "c1", "d1", now=now - timedelta(minutes=1), title="First")
    put(db, "c1", "d2", now=now, title="Second")
    cli("archive", "c1", first)

    archived = cli("list", "c1", "--archived")
    assert archived.exit_code == 0, archived.output
    lines = archived.output.splitlines()
    assert lines[0] == "c1: 1 unread"
    assert lines[1:] == [f"  *a {first}  {now - timedelta(minutes=1):%Y-%m-%d %H:%M}  First"]

    assert cli("unarchive", "c1", first).output == f"{first} unarchived\n"
    assert cli("unarchive", "c1", first).output == f"{first} unarchived\n"
    listing = json.loads(cli("list", "c1", "--json").output)
    assert [m["title"] for m in listing["messages"]] == ["Second", "First"]
    assert listing["unread"] == 2
    assert cli("list", "c1", "--archived").output.splitlines()[1:] == ["  no messages"]

    theirs = cli("unarchive", "c2", first)
    assert theirs.exit_code == 1
    assert theirs.output.startswith(f"error: there is no inbox message {first!r} for this contact")


def test_the_cli_purges_expired_messages_and_says_how_many(db: Database, cli: Cli) -> None:
    now = datetime.now(UTC)
    put(db, "c1", "old", now=now - timedelta(days=60), expires_at=now - timedelta(days=40))
    put(db, "c2", "older", now=now - timedelta(days=90), expires_at=now - timedelta(days=80))
    put(db, "c1", "recent", now=now - timedelta(days=9), expires_at=now - timedelta(days=5))
    put(db, "c1", "live", now=now)

    first = cli("purge")
    assert first.exit_code == 0, first.output
    assert first.output == "2 messages deleted (expired more than 30d ago)\n"
    assert rows(db) == 2
    assert cli("purge", "--older-than", "2d").output == (
        "1 message deleted (expired more than 2d ago)\n"
    )
    assert cli("purge").output == "0 messages deleted (expired more than 30d ago)\n"

    bad = cli("purge", "--older-than", "30x")
    negative = cli("purge", "--older-than", "-1d")
    assert (bad.exit_code, negative.exit_code) == (1, 1)
    assert bad.output.startswith("error: --older-than '30x': '30x' is not a duration")
    assert (
        negative.output
        == "error: --older-than '-1d': must be a positive duration such as 1h or 2d\n"
    )
    assert listed(db, "c1", now) == ["live"]


def test_the_cli_prints_a_token_the_http_api_accepts(cli: Cli) -> None:
    printed = cli("token", "c1")

    assert printed.exit_code == 0, printed.output
    key = Settings(data_dir=cli.data_dir, secret_key="").signing_key()
    assert read_inbox_token(key, printed.output.strip()) == "c1"
