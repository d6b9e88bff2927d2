"""The send-time policy check against a large database: decisions per second and p99.

    python benchmarks/policy.py [--contacts 100000] [--ledger 1000000] [--checks 3000]
                                [--databases sqlite,postgresql]

Fills a fresh database (SQLite file, and a schema of its own on the local
PostgreSQL server) with contacts, consent ledger lines, deliveries that count
toward caps, suppressions, preferences and blackouts, then times the check
the send activity makes: load the facts with the contact's row locked,
decide, write the audit line, commit. Target: p99 <= 5 ms. As a floor on the
same database it also times a bare primary-key read of the contact. Writes
the figures to benchmarks/results/policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from tidings.catalog import load_policy  # noqa: E402
from tidings.db import audit  # noqa: E402
from tidings.db.engine import Database, normalize_url  # noqa: E402
from tidings.db.policy_facts import load_facts  # noqa: E402
from tidings.models.policy import Message  # noqa: E402
from tidings.models.tables import (  # noqa: E402
    BlackoutRecord,
    ConsentRecord,
    Contact,
    ContactIdentity,
    Delivery,
    PreferenceRecord,
    SuppressionRecord,
)
from tidings.policy.engine import decide  # noqa: E402
from tidings.settings import PACKAGE_DIR  # noqa: E402

RESULTS = HERE / "results" / "policy.json"
POSTGRES = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TARGET_P99_MS = 5.0
NOW = datetime(2027, 1, 5, 17, 0, tzinfo=UTC)
AUDIT_KEY = b"benchmark-audit-key"
"""Seals the audit records the checks write (a real service derives it from its secret)."""
JURISDICTIONS = ["US-TX", "US-FL", "US-NY", "CA-ON", "DE", "FR", "GB", None]
TIMEZONES = ["America/Chicago", "America/New_York", "America/Toronto", "Europe/Berlin", "UTC"]
BASES = ["express_written", "express", "implied_purchase", "legitimate_interest"]
BATCH = 20_000


def fill(database: Database, contacts: int, ledger: int, seed: int = 7) -> None:
    """Bulk-load a realistic spread of policy data."""
    rng = random.Random(seed)
    engine = database.engine
    per_contact = max(1, ledger // contacts)

    def chunks(rows: Callable[[int], list[dict[str, object]]], table: object) -> None:
        for start in range(0, contacts, BATCH):
            batch = [row for n in range(start, min(start + BATCH, contacts)) for row in rows(n)]
            with engine.begin() as connection:
                connection.execute(insert(table), batch)  # type: ignore[arg-type]

    chunks(
        lambda n: [
            {
                "key": f"c{n}",
                "timezone": rng.choice(TIMEZONES),
                "locale": "en",
                "jurisdiction": rng.choice(JURISDICTIONS),
                "traits": {},
                "created_at": NOW,
                "updated_at": NOW,
            }
        ],
        Contact,
    )
    chunks(
        lambda n: [
            {
                "contact_key": f"c{n}",
                "kind": "email",
                "value": f"c{n}@bench.example",
                "created_at": NOW,
            },
            {"contact_key": f"c{n}", "kind": "phone", "value": f"+1555{n:07d}", "created_at": NOW},
        ],
        ContactIdentity,
    )
    chunks(
        lambda n: [
            {
                "contact_key": f"c{n}",
                "channel": rng.choice(["email", "sms"]),
                "purpose": rng.choice(["marketing", "service", None]),
                "topic": rng.choice([None, "deals", "news", "billing"]),
                "action": rng.choices(["grant", "revoke", "object"], weights=[8, 2, 1])[0],
                "basis": rng.choice(BASES),
                "source": "bench",
                "proof": {"form": "bench"},
                "recorded_at": NOW,
                "effective_at": NOW - timedelta(days=rng.randint(1, 900)),
                "expires_at": None,
            }
            for _ in range(per_contact)
        ],
        ConsentRecord,
    )
    chunks(
        lambda n: [
            {
                "id": uuid.uuid4().hex,
                "idempotency_key": f"bench/{n}/{i}",
                "contact_key": f"c{n}",
                "journey": "bench",
                "step_id": "s",
                "channel": "email",
                "template": "t",
                "purpose": rng.choice(["marketing", "service"]),
                "topic": "deals",
                "status": "sent",
                "attempts": 1,
                "scheduled_at": NOW,
                "counted_at": NOW - timedelta(hours=rng.randint(1, 24 * 30)),
                "updated_at": NOW,
            }
            for i in range(3)
        ],
        Delivery,
    )
    chunks(
        lambda n: (
            [
                {
                    "contact_key": f"c{n}",
                    "channel": "email",
                    "reason": "complaint",
                    "note": "",
                    "created_at": NOW,
                }
            ]
            if n % 100 == 0
            else []
        ),
        SuppressionRecord,
    )
    chunks(
        lambda n: (
            [
                {
                    "contact_key": f"c{n}",
                    "channel": "email",
                    "topic": "news",
                    "subscribed": False,
                    "updated_at": NOW,
                }
            ]
            if n % 10 == 0
            else []
        ),
        PreferenceRecord,
    )
    with engine.begin() as connection:
        connection.execute(
            insert(BlackoutRecord),
            [
                {
                    "name": f"holiday {i}",
                    "regions": ["US"],
                    "purposes": ["marketing"],
                    "starts_at": NOW + timedelta(days=30 * i),
                    "ends_at": NOW + timedelta(days=30 * i + 1),
                    "action": "defer",
                    "created_at": NOW,
                }
                for i in range(1, 13)
            ],
        )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))


def time_checks(database: Database, contacts: int, checks: int) -> dict[str, float]:
    """The send-time check, one transaction each, over random contacts.

    `check`: reading the facts (the contact's row locked) and deciding, inside
    the transaction; `with_commit`: that plus writing the audit line and the
    durable commit, which the send shares with its delivery claim.
    """
    rng = random.Random(11)
    policy = load_policy(PACKAGE_DIR / "policy.yaml")
    message = Message(channel="email", purpose="marketing", topic="deals")
    check_ms: list[float] = []
    total_ms: list[float] = []
    floor_ms: list[float] = []
    outcomes = {"send": 0, "wait": 0, "skip": 0}
    for _ in range(checks):
        key = f"c{rng.randrange(contacts)}"
        began = time.perf_counter()
        with database.session() as session:
            facts = load_facts(
                session=session,
                contact_key=key,
                message=message,
                now=NOW,
                config=policy,
                default_timezone="UTC",
                lock=True,
            )
            decision = decide(facts)
            check_ms.append((time.perf_counter() - began) * 1000)
            audit.record_decision(
                session=session,
                contact_key=key,
                decision=decision,
                at=NOW,
                stage="send",
                journey="bench",
                step_id="s",
            )
        total_ms.append((time.perf_counter() - began) * 1000)
        outcomes[decision.action] += 1
        began = time.perf_counter()
        with Session(database.engine) as session:
            session.get(Contact, key)
        floor_ms.append((time.perf_counter() - began) * 1000)
    return {
        "decisions_per_second": round(checks / (sum(total_ms) / 1000), 1),
        "check_p50_ms": round(statistics.median(check_ms), 3),
        "check_p99_ms": round(_percentile(check_ms, 99), 3),
        "with_commit_p50_ms": round(statistics.median(total_ms), 3),
        "with_commit_p99_ms": round(_percentile(total_ms, 99), 3),
        "primary_key_read_p99_ms": round(_percentile(floor_ms, 99), 3),
        "check_p99_vs_primary_key_read": round(
            _percentile(check_ms, 99) / _percentile(floor_ms, 99), 1
        ),
        **{f"decided_{k}": v for k, v in outcomes.items()},
    }


def _percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def run_sqlite(contacts: int, ledger: int, checks: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'bench.db'}", audit_key=AUDIT_KEY)
        began = time.perf_counter()
        fill(database, contacts, ledger)
        loaded = time.perf_counter() - began
        figures = time_checks(database, contacts, checks)
        database.dispose()
    return {"load_seconds": round(loaded, 1), **figures}


def run_postgresql(contacts: int, ledger: int, checks: int) -> dict[str, object]:
    schema = f"tidings_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        database = Database(f"{POSTGRES}?options=-csearch_path%3D{schema}", audit_key=AUDIT_KEY)
        began = time.perf_counter()
        fill(database, contacts, ledger)
        loaded = time.perf_counter() - began
        figures = time_checks(database, contacts, checks)
        database.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return {"load_seconds": round(loaded, 1), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--ledger", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=3_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    runners = {"sqlite": run_sqlite, "postgresql": run_postgresql}
    results: dict[str, object] = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "contacts": args.contacts,
        "ledger_rows": args.ledger,
        "checks": args.checks,
        "target_p99_ms": TARGET_P99_MS,
    }
    for name in args.databases.split(","):
        print(
            f"{name}: loading {args.contacts} contacts, {args.ledger} ledger rows ...",
            file=sys.stderr,
        )
        results[name] = runners[name](args.contacts, args.ledger, args.checks)
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
