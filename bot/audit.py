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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


# Built once: ``json.dumps`` with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DETAIL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def canonical(row: dict[str, Any]) -> str:
    """The exact text the hash covers (see module docstring)."""
    return _CANONICAL.encode(
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
        ]
    )


def row_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(row).encode("utf-8")).hexdigest()


def dump_detail(detail: Any) -> str:
    return _DETAIL.encode(detail if detail is not None else {})


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
    head: tuple[int, str] | None = None  # the last event verified: (id, hash)

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events verified"
        return f"audit chain broken at event {self.broken_id}: {self.reason}"

    @property
    def anchor(self) -> str | None:
        """``<id>:<hash>`` of the last event, to keep where the database's writers cannot."""
        return f"{self.head[0]}:{self.head[1]}" if self.head else None


class AuditLog:
    """Append and read audit events. Secrets passed in are scrubbed from every detail."""

    def __init__(self, db: Database, *, secrets: Sequence[str] = ()) -> None:
        self.db = db
        # ``detail`` is JSON: a secret with a quote, backslash or control character appears in
        # it escaped, so look for that form too.
        self._forms = tuple(
            form
            for secret in secrets
            if secret and len(secret) >= 4
            for form in dict.fromkeys((secret, json.dumps(secret, ensure_ascii=False)[1:-1]))
        )
        # Connections inside ``chain``: the head they appended last (None until read once).
        self._heads: dict[sqlite3.Connection, tuple[int, str] | None] = {}

    def _scrub(self, text: str) -> str:
        scrubbed = text
        for form in self._forms:
            if form in scrubbed:
                scrubbed = scrubbed.replace(form, "***")
        if scrubbed is not text:
            try:  # a secret spelled like JSON punctuation may have cut through the structure
                json.loads(scrubbed)
            except ValueError:
                scrubbed = _DETAIL.encode({"scrubbed": scrubbed})
        return scrubbed

    @contextmanager
    def chain(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Inside the caller's write transaction on ``conn``, read the chain head once and
        then keep it in memory, instead of reading it back before every append.

        Sound because ``BEGIN IMMEDIATE`` holds SQLite's write lock: no other connection can
        append until the commit, and every append on ``conn`` comes through here. Do not roll
        back to a savepoint inside the block (the head kept here would outlive its row)."""
        if not conn.in_transaction:
            raise RuntimeError("AuditLog.chain() needs a write transaction on the connection")
        if conn in self._heads:
            raise RuntimeError("AuditLog.chain() is not re-entrant")
        self._heads[conn] = None
        try:
            yield
        finally:
            del self._heads[conn]

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
        ts: str | None = None,
    ) -> dict[str, Any]:
        """Append one event and return the stored row.

        Pass ``conn`` to append inside a transaction the caller already holds (so that a state
        change and its audit row commit together); otherwise the append is its own transaction.
        ``ts`` defaults to now (callers that record a batch at one instant pass theirs).
        """
        incident = None if incident_id is None else str(incident_id)
        if conn is not None:
            return self._insert(
                conn, actor, action, host, runbook, request_id, incident, detail, ts
            )
        with self.db.transaction() as tx:
            return self._insert(tx, actor, action, host, runbook, request_id, incident, detail, ts)

    def append_many(self, events: Iterable[Event]) -> int:
        """Append several events in one transaction (faster for batches)."""
        n = 0
        with self.db.transaction() as tx, self.chain(tx):
            for e in events:
                self._insert(
                    tx, e.actor, e.action, e.host, e.runbook, e.request_id, e.incident_id, e.detail
                )
                n += 1
        return n

    def _insert(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        host: str | None,
        runbook: str | None,
        request_id: str | None,
        incident_id: str | None,
        detail: dict[str, Any] | None,
        ts: str | None = None,
    ) -> dict[str, Any]:
        if action not in ACTIONS:
            raise StabilizeError(f"unknown audit action {action!r}")
        if not _ACTOR_RE.match(actor):
            raise StabilizeError(f"invalid audit actor {actor!r}")
        head = self._heads.get(conn)
        if head is None:
            head = _read_head(conn)
        row: dict[str, Any] = {
            "id": head[0] + 1,
            "ts": ts or iso(),
            "actor": actor,
            "action": action,
            "host": host,
            "runbook": runbook,
            "request_id": request_id,
            "incident_id": incident_id,
            "detail": self._scrub(dump_detail(detail)),
            "prev_hash": head[1],
        }
        row["hash"] = row_hash(row)
        conn.execute(_INSERT_SQL, [row[c] for c in COLUMNS])
        if conn in self._heads:
            self._heads[conn] = (row["id"], row["hash"])
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

    def verify(self, anchors: Mapping[int, str] | None = None) -> VerifyResult:
        """Walk the chain from the first row; name the first event that does not fit.

        ``anchors`` (event id → hash, kept outside the database) must still be in the chain
        as they were: a history rewritten with every later hash recomputed, or cut short
        with ``sqlite_sequence`` edited too, passes the walk but not its anchors.
        """
        anchors = anchors or {}
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
            anchored = anchors.get(row["id"])
            if anchored is not None and anchored != row["hash"]:
                return VerifyResult(
                    False,
                    checked,
                    row["id"],
                    "its hash is not the anchor's: the history up to here was rewritten"
                    " and rehashed",
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
        beyond = [n for n in anchors if n > prev_id]
        if beyond:
            return VerifyResult(
                False,
                checked,
                min(beyond),
                f"the anchored event is missing: the log ends at event {prev_id}"
                " (the newest rows were removed)",
            )
        return VerifyResult(True, checked, head=(prev_id, prev_hash) if prev_id else None)


def _read_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The id to continue from and the hash to chain to, read inside the write transaction."""
    last = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'").fetchone()
    # AUTOINCREMENT never reuses ids, so a removed tail leaves a gap verify will name.
    return max(last[0] if last else 0, seq[0] if seq else 0), last[1] if last else GENESIS


def detail_of(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row.get("detail") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}
