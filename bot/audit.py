"""The append-only, hash-chained audit log in the ``audit_events`` table.

Canonical form (what the hash covers) — documented in docs/audit.md, never to change:

    canonical = JSON array, UTF-8, no spaces (separators "," and ":"), non-ASCII kept as is:
        [id, ts, actor, action, host, runbook, request_id, incident_id, detail, prev_hash]
    where ``detail`` is the column's text exactly as stored (itself JSON with sorted keys and
    no spaces) and absent values are JSON ``null``.
    hash = lowercase hex SHA-256 of canonical.
    prev_hash = the previous row's hash; the first row's prev_hash is 64 zeros.

Rows are appended under ``BEGIN IMMEDIATE``: the read of the last hash and the insert happen
while SQLite holds the write lock, so concurrent writers (threads or processes) can never fork
the chain. UPDATE and DELETE are refused by triggers; ``verify`` catches what happens when
somebody drops them.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.db import Database, iso, utcnow
from bot.errors import StabilizeError

GENESIS = "0" * 64

ACTIONS = frozenset(
    {
        "alert.received",
        "alert.deduplicated",
        "incident.opened",
        "incident.resolved",
        "diagnosis.posted",
        "request.created",
        "request.approved",
        "request.rejected",
        "request.expired",
        "request.denied",
        "execution.started",
        "execution.step",
        "execution.succeeded",
        "execution.failed",
        "execution.rolled_back",
        "execution.interrupted",
        "auth.rejected",
        "input.rejected",
    }
)

COLUMNS = (
    "id",
    "ts",
    "actor",
    "action",
    "host",
    "runbook",
    "request_id",
    "incident_id",
    "detail",
    "prev_hash",
    "hash",
)

_INSERT_SQL = (
    f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)

_ACTOR_RE = re.compile(r"^(system|sns|alertmanager|agent|cli:[^\s]{1,64}|[UW][A-Z0-9]{2,31})\Z")


def canonical(row: dict[str, Any]) -> str:
    """The exact text the hash covers (see module docstring)."""
    return json.dumps(
        [
            row["id"],
            row["ts"],
            row["actor"],
            row["action"],
            row.get("host"),
            row.get("runbook"),
            row.get("request_id"),
            row.get("incident_id"),
            row["detail"],
            row["prev_hash"],
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def row_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(row).encode("utf-8")).hexdigest()


def dump_detail(detail: Any) -> str:
    return json.dumps(
        detail if detail is not None else {},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    host: str | None = None
    runbook: str | None = None
    request_id: str | None = None
    incident_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events verified"
        return f"audit chain broken at event {self.broken_id}: {self.reason}"


class AuditLog:
    """Append and read audit events. Secrets passed in are scrubbed from every detail."""

    def __init__(self, db: Database, *, secrets: Sequence[str] = ()) -> None:
        self.db = db
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def _scrub(self, text: str) -> str:
        # ``text`` is JSON: a secret with a quote, backslash or control character appears in
        # it escaped, so look for that form too.
        for secret in self._secrets:
            for form in (secret, json.dumps(secret, ensure_ascii=False)[1:-1]):
                if form in text:
                    text = text.replace(form, "***")
        return text

    def append(
        self,
        actor: str,
        action: str,
        *,
        host: str | None = None,
        runbook: str | None = None,
        request_id: str | None = None,
        incident_id: str | int | None = None,
        detail: dict[str, Any] | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> dict[str, Any]:
        """Append one event and return the stored row.

        Pass ``conn`` to append inside a transaction the caller already holds (so that a state
        change and its audit row commit together); otherwise the append is its own transaction.
        """
        event = Event(
            actor,
            action,
            host,
            runbook,
            request_id,
            None if incident_id is None else str(incident_id),
            detail or {},
        )
        if conn is not None:
            return self._insert(conn, event)
        with self.db.transaction() as tx:
            return self._insert(tx, event)

    def append_many(self, events: Iterable[Event]) -> int:
        """Append several events in one transaction (faster for batches)."""
        n = 0
        with self.db.transaction() as tx:
            for event in events:
                self._insert(tx, event)
                n += 1
        return n

    def _insert(self, conn: sqlite3.Connection, event: Event) -> dict[str, Any]:
        if event.action not in ACTIONS:
            raise StabilizeError(f"unknown audit action {event.action!r}")
        if not _ACTOR_RE.match(event.actor):
            raise StabilizeError(f"invalid audit actor {event.actor!r}")
        last = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'").fetchone()
        # AUTOINCREMENT never reuses ids, so a removed tail leaves a gap verify will name.
        next_id = max(last[0] if last else 0, seq[0] if seq else 0) + 1
        row: dict[str, Any] = {
            "id": next_id,
            "ts": iso(),
            "actor": event.actor,
            "action": event.action,
            "host": event.host,
            "runbook": event.runbook,
            "request_id": event.request_id,
            "incident_id": event.incident_id,
            "detail": self._scrub(dump_detail(event.detail)),
            "prev_hash": last[1] if last else GENESIS,
        }
        row["hash"] = row_hash(row)
        conn.execute(
            _INSERT_SQL,
            [row[c] for c in COLUMNS],
        )
        return row

    # -- reading -------------------------------------------------------------------------

    def list(
        self,
        *,
        host: str | None = None,
        since: timedelta | datetime | None = None,
        action: str | None = None,
        incident_id: str | None = None,
        request_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if host:
            where.append("host = ?")
            params.append(host)
        if since is not None:
            start = utcnow() - since if isinstance(since, timedelta) else since
            where.append("ts >= ?")
            params.append(iso(start))
        if action:
            where.append("action = ?")
            params.append(action)
        if incident_id is not None:
            where.append("incident_id = ?")
            params.append(str(incident_id))
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        sql = "SELECT * FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.db.query(sql, tuple(params))

    def count(self, action: str | None = None) -> int:
        if action:
            row = self.db.query_one(
                "SELECT count(*) AS n FROM audit_events WHERE action = ?", (action,)
            )
        else:
            row = self.db.query_one("SELECT count(*) AS n FROM audit_events")
        return int(row["n"]) if row else 0

    def verify(self) -> VerifyResult:
        """Walk the chain from the first row; name the first event that does not fit."""
        conn = self.db.conn
        prev_hash, prev_id, checked = GENESIS, 0, 0
        for r in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_events ORDER BY id"):
            row = dict(r)
            if row["id"] != prev_id + 1:
                return VerifyResult(
                    False,
                    checked,
                    prev_id + 1,
                    f"event {prev_id + 1} is missing (rows were removed)",
                )
            if row["prev_hash"] != prev_hash:
                return VerifyResult(
                    False,
                    checked,
                    row["id"],
                    "prev_hash does not match the previous event"
                    " (removed or inserted out of chain)",
                )
            if row_hash(row) != row["hash"]:
                return VerifyResult(
                    False, checked, row["id"], "content does not match its hash (row was altered)"
                )
            prev_hash, prev_id = row["hash"], row["id"]
            checked += 1
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'").fetchone()
        if seq and seq[0] > prev_id:
            return VerifyResult(
                False,
                checked,
                prev_id + 1,
                f"events {prev_id + 1}..{seq[0]} are missing (the newest rows were removed)",
            )
        return VerifyResult(True, checked)


def detail_of(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row.get("detail") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}
