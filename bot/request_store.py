"""Approval requests as stored in SQLite (table ``requests`` and ``approvals``)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.db import parse_iso, utcnow
from bot.services import Services


@dataclass(frozen=True)
class Request:
    id: str
    runbook: str
    host: str
    params: dict[str, Any]
    raw_params: dict[str, str]
    requested_by: str
    reason: str
    evidence: Any
    plan: str
    incident_id: str | None
    channel: str
    thread_key: str | None
    state: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    finished_at: datetime | None = None
    result: str | None = None
    approvals: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """The outbox key of the request message (its thread holds the progress)."""
        return f"request:{self.id}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at

    def command(self) -> str:
        """The slash command that asks for this run again."""
        params = " ".join(f"{k}={v}" for k, v in self.raw_params.items())
        return f"/stabilize run {self.runbook} {self.host} {params}".rstrip()

    @classmethod
    def from_row(cls, row: dict[str, Any], approvals: tuple[str, ...]) -> Request:
        return cls(
            id=row["id"],
            runbook=row["runbook"],
            host=row["host"],
            params=json.loads(row["params"]),
            raw_params=json.loads(row["raw_params"]),
            requested_by=row["requested_by"],
            reason=row["reason"],
            evidence=json.loads(row["evidence"]),
            plan=row["plan"],
            incident_id=row["incident_id"],
            channel=row["channel"],
            thread_key=row["thread_key"],
            state=row["state"],
            created_at=parse_iso(row["created_at"]),
            expires_at=parse_iso(row["expires_at"]),
            decided_by=row["decided_by"],
            finished_at=parse_iso(row["finished_at"]) if row["finished_at"] else None,
            result=row["result"],
            approvals=approvals,
        )


def load_request(conn: sqlite3.Connection, request_id: str) -> Request | None:
    row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        return None
    users = tuple(
        r[0]
        for r in conn.execute(
            "SELECT user FROM approvals WHERE request_id = ? ORDER BY ts, rowid", (request_id,)
        )
    )
    return Request.from_row(dict(row), users)


def get_request(services: Services, request_id: str) -> Request | None:
    """The request as stored now (None when there is no such id)."""
    return load_request(services.db.conn, request_id)


def list_requests(services: Services, *, state: str | None = None) -> list[Request]:
    sql = "SELECT id FROM requests"
    args: tuple[str, ...] = ()
    if state:
        sql, args = sql + " WHERE state = ?", (state,)
    ids = [r[0] for r in services.db.conn.execute(sql + " ORDER BY created_at", args)]
    return [r for r in (get_request(services, i) for i in ids) if r is not None]
