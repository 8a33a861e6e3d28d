"""How much does the hash chain cost? Audit appends vs plain sqlite-utils inserts.

Appends N events (default 20,000) three ways, each into a fresh WAL database with the same
schema, in the same run so the machine's noise hits all of them:

* plain: ``sqlite_utils`` ``table.insert(row)``, one transaction per row (the baseline);
* chained: ``AuditLog.append``, one ``BEGIN IMMEDIATE`` transaction per event, as in production;
* batched: ``AuditLog.append_many`` in batches (``--batch``, default 100).

Goal: chained >= 5,000 events/s and >= 0.5 x plain. Run:

    .venv/bin/python bench/audit_append.py [--events 20000] [--batch 100]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import sqlite_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.audit import AuditLog, Event, dump_detail  # noqa: E402
from bot.db import Database, iso  # noqa: E402
from bot.migrations import m20261204_2040_audit_events as schema  # noqa: E402

GOAL_RATE = 5_000
GOAL_RATIO = 0.5


def events(n: int) -> list[Event]:
    return [
        Event(
            actor="system",
            action="execution.step",
            host=f"prod-web-{i % 17:02d}",
            runbook="add-swap",
            request_id=f"r-{i // 10}",
            incident_id=str(i // 100),
            detail={"step": i % 10, "command": "swapon --show", "ok": True},
        )
        for i in range(n)
    ]


def bench_plain(path: Path, batch: list[Event]) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # what bot/db.py uses
    schema.up(conn)  # same table, indexes and triggers as the real log
    conn.commit()
    table = sqlite_utils.Database(conn)["audit_events"]
    rows = [
        {
            "ts": iso(),
            "actor": e.actor,
            "action": e.action,
            "host": e.host,
            "runbook": e.runbook,
            "request_id": e.request_id,
            "incident_id": e.incident_id,
            "detail": dump_detail(e.detail),
            "prev_hash": "0" * 64,
            "hash": "f" * 64,
        }
        for e in batch
    ]
    start = time.perf_counter()
    for row in rows:
        table.insert(row)  # sqlite-utils commits each insert: one transaction per row
    elapsed = time.perf_counter() - start
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == len(rows)
    conn.close()
    return len(rows) / elapsed


def bench_chained(path: Path, batch: list[Event]) -> float:
    db = Database(path)
    log = AuditLog(db)
    start = time.perf_counter()
    for e in batch:
        log.append(
            e.actor,
            e.action,
            host=e.host,
            runbook=e.runbook,
            request_id=e.request_id,
            incident_id=e.incident_id,
            detail=e.detail,
        )
    elapsed = time.perf_counter() - start
    assert log.verify().ok
    db.close()
    return len(batch) / elapsed


def bench_batched(path: Path, batch: list[Event], size: int) -> tuple[float, float]:
    db = Database(path)
    log = AuditLog(db)
    start = time.perf_counter()
    for i in range(0, len(batch), size):
        log.append_many(batch[i : i + size])
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    result = log.verify()
    verify_elapsed = time.perf_counter() - start
    assert result.ok and result.checked == len(batch), str(result)
    db.close()
    return len(batch) / elapsed, len(batch) / verify_elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per variant")
    parser.add_argument("--batch", type=int, default=100, help="events per append_many")
    args = parser.parse_args(argv)
    batch = events(args.events)
    with tempfile.TemporaryDirectory(prefix="stabilize-bench-") as tmp:
        folder = Path(tmp)
        plain = bench_plain(folder / "plain.db", batch)
        chained = bench_chained(folder / "chained.db", batch)
        batched, verify = bench_batched(folder / "batched.db", batch, args.batch)
    ratio = chained / plain
    ok = chained >= GOAL_RATE and ratio >= GOAL_RATIO
    print(f"audit append benchmark: {args.events:,} events per variant, fresh WAL databases")
    lines = [
        ("plain sqlite-utils insert, 1 tx/row", f"{plain:,.0f} events/s"),
        ("AuditLog.append (chained), 1 tx/event", f"{chained:,.0f} events/s"),
        (f"AuditLog.append_many, {args.batch} events/tx", f"{batched:,.0f} events/s"),
        ("AuditLog.verify", f"{verify:,.0f} events/s"),
        ("ratio chained/plain", f"{ratio:.2f}"),
    ]
    for label, value in lines:
        print(f"  {label:<42}{value:>18}")
    verdict = "met" if ok else "NOT met"
    print(f"goal (>= {GOAL_RATE:,} events/s and ratio >= {GOAL_RATIO}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
