"""One SQLAlchemy engine per process, for SQLite (the embedded default) or any server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from tidings.db.audit_chain import AUDIT_KEY_INFO, install_append_only
from tidings.errors import TidingsError
from tidings.models.tables import SCHEMA_VERSION, SchemaInfo

if TYPE_CHECKING:
    from tidings.settings import Settings

T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@contextmanager
def scratch_schema(server_url: str, prefix: str) -> Iterator[str]:
    """A database URL for a fresh schema on a PostgreSQL server, dropped on exit: the
    tests' and benchmarks' way to run on the real server without touching its data."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{server_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def make_engine(url: str, *, create_tables: bool = True, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL and write transactions that wait their turn."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        _tune_sqlite(engine)
    else:
        # No pre-ping: it costs a round trip per checkout on the send path. A
        # connection the server dropped fails once, is discarded by the pool, and
        # the activity or call is retried.
        engine = create_engine(url, pool_recycle=1800, **kwargs)
    if create_tables:
        _create_or_check_schema(engine)
    return engine


def _create_or_check_schema(engine: Engine) -> None:
    """Create the tables in a new database; refuse one made by another version."""
    tables = set(inspect(engine).get_table_names())
    if "contacts" in tables:
        with Session(engine) as session:
            info = session.get(SchemaInfo, 1) if "schema_info" in tables else None
        found = info.version if info is not None else 1
        if found != SCHEMA_VERSION:
            where = make_url(str(engine.url)).render_as_string(hide_password=True)
            raise TidingsError(
                f"the database {where} has schema version {found}, and this tidings needs "
                f"{SCHEMA_VERSION}. For the embedded development database, remove it (it is "
                "under the data dir, .tidings/ by default) and start again; tidings has no "
                "migrations before its first release"
            )
        return
    with engine.begin() as connection:
        SQLModel.metadata.create_all(connection)
        install_append_only(connection)
    with Session(engine) as session, contextlib.suppress(IntegrityError):
        # Another process creating the same database at the same moment wrote it first.
        session.add(SchemaInfo(version=SCHEMA_VERSION))
        session.commit()


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below (pysqlite's own
        # deferred BEGIN lets two writers deadlock instead of waiting).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The app database: an engine plus short transactional sessions.

    `audit_key` (`Settings.audit_key()`) seals the audit log's records: its
    sessions carry it, and code that records a decision needs it. Without it
    the database reads everything but refuses to append to the audit log.
    """

    def __init__(
        self, url: str, *, create_tables: bool = True, audit_key: bytes | None = None
    ) -> None:
        self.url = normalize_url(url)
        self.audit_key = audit_key
        self.engine = make_engine(self.url, create_tables=create_tables)
        # SQLite lets one writer in at a time, and its busy handler sleeps in
        # growing steps (up to 100 ms) while it waits; threads of one process
        # queue on a lock instead, which wakes the next one at once. Other
        # processes still wait through busy_timeout.
        self._sqlite_turn: AbstractContextManager[object] = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @classmethod
    def for_settings(cls, settings: Settings, *, create_tables: bool = True) -> Database:
        """The configured database, with the audit key: what records decisions uses."""
        return cls(
            settings.database_url, create_tables=create_tables, audit_key=settings.audit_key()
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error.

        Keep sessions short: on SQLite a session is a write transaction.
        """
        info = {AUDIT_KEY_INFO: self.audit_key} if self.audit_key else {}
        with (
            self._sqlite_turn,
            Session(self.engine, expire_on_commit=False, info=info) as session,
        ):
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a transaction on a worker thread, from async code.

        Two callers racing to insert the same row (one event id, one email) get
        an IntegrityError on PostgreSQL; the loser's retry sees the winner's row.
        """

        def attempt() -> T:
            for tries in (1, 2):
                try:
                    with self.session() as session:
                        return work(session)
                except IntegrityError:
                    if tries == 2:
                        raise
            raise AssertionError("unreachable")

        return await asyncio.to_thread(attempt)

    def dispose(self) -> None:
        self.engine.dispose()
