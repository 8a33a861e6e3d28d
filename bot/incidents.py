"""Alerts grouped into incidents: one open incident, and one Slack message, per host + alarm.

``ingest`` runs inside the caller's transaction, so an alert's row, its audit events, the
incident change and the Slack message (queued in the outbox) commit together — before the
HTTP answer — or not at all. ``accept`` owns such a transaction and, after the commit,
starts the diagnosis of every newly opened incident; the HTTP routes use its group-commit
twin ``bot.intake.batching.accept_async``. Repeats only mark an incident's message stale;
``incident_message_sync`` (a background job) refreshes it.

Incident ids are the integer row ids; people see them as ``INC-<id>``; the incident's message
key is ``incident:<id>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.blocks.incidents import diagnosis_failed_text, incident_message
from bot.db import iso
from bot.errors import StabilizeError
from bot.intake.model import Alert
from bot.services import Services

log = logging.getLogger(__name__)

_RANK = {"info": 0, "warning": 1, "critical": 2}
_DETAILS = json.JSONEncoder(default=str, separators=(",", ":"))  # built once, not per alert


@dataclass(frozen=True)
class Outcome:
    """What one alert did: ``opened``, ``deduplicated``, ``resolved`` or ``ignored``."""

    alert: Alert
    result: str
    incident_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.alert.host,
            "alarm": self.alert.name,
            "status": self.alert.status,
            "result": self.result,
            "incident_id": self.incident_id,
        }


def message_key(incident_id: int) -> str:
    return f"incident:{incident_id}"


def get_incident(services: Services, incident_id: int | str) -> dict[str, Any] | None:
    return services.db.query_one("SELECT * FROM incidents WHERE id = ?", (int(incident_id),))


def open_incidents(services: Services, host: str | None = None) -> list[dict[str, Any]]:
    if host:
        return services.db.query(
            "SELECT * FROM incidents WHERE state = 'open' AND host = ? ORDER BY id", (host,)
        )
    return services.db.query("SELECT * FROM incidents WHERE state = 'open' ORDER BY id")


# -- ingest (inside the caller's transaction) ---------------------------------------------


def ingest(
    services: Services, alerts: Sequence[Alert], *, conn: sqlite3.Connection
) -> list[Outcome]:
    """Record ``alerts`` in order and apply them to incidents, all through ``conn``.

    Every alert gets its ``alerts`` row and audit events; a new incident's message is queued
    in the outbox here; repeats only mark the message stale, and ``incident_message_sync``
    (a background job of ``stabilize serve``) queues one update for it shortly after."""
    with services.audit.chain(conn):
        batch = Ingest(services, conn)
        outcomes = [batch.one(alert) for alert in alerts]
        batch.finish()
    return outcomes


class Ingest:
    """One transaction's worth of alerts. Repeats of an incident within it cost one row each
    (alert + audit); the incident row itself is written once, at ``finish``. The alerts of
    one transaction are committed at one instant and carry one timestamp. Use it inside
    ``services.audit.chain(conn)``."""

    def __init__(self, services: Services, conn: sqlite3.Connection) -> None:
        self.services = services
        self.conn = conn
        self.now = iso()
        self.open: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.touched: dict[int, str] = {}  # incident id -> "post" | "update"

    def _current(self, key: tuple[str, str]) -> dict[str, Any] | None:
        if key not in self.open:
            self.open[key] = _row(
                self.conn,
                "SELECT * FROM incidents WHERE host = ? AND alarm = ? AND state = 'open'",
                key,
            )
        return self.open[key]

    def one(self, alert: Alert) -> Outcome:
        now = self.now
        key = (alert.host, alert.name)
        current = self._current(key)
        if alert.firing:
            if current is None:
                return self._open(alert, key, now)
            current["count"] += 1
            current["last_seen"] = now
            current["severity"] = max(
                current["severity"], alert.severity, key=lambda s: _RANK.get(s, 1)
            )
            current["summary"] = alert.summary or current["summary"]
            self.dirty.add(key)
            return self._record(alert, now, current["id"], "deduplicated")
        if current is not None:
            self._write(key)
            self.conn.execute(
                "UPDATE incidents SET state = 'resolved', resolved_at = ?, last_seen = ?"
                " WHERE id = ?",
                (now, now, current["id"]),
            )
            self.open[key] = None
            self.touched.setdefault(current["id"], "update")  # an unposted one stays "post"
            return self._record(alert, now, current["id"], "resolved")
        # A resolve for nothing open: a repeat of one already applied, or of an alarm never
        # seen firing. Either way it is recorded, and changes no incident.
        last = _row(
            self.conn,
            "SELECT id FROM incidents WHERE host = ? AND alarm = ? ORDER BY id DESC LIMIT 1",
            key,
        )
        if last is not None:
            return self._record(alert, now, last["id"], "deduplicated")
        return self._record(alert, now, None, "ignored")

    def _open(self, alert: Alert, key: tuple[str, str], now: str) -> Outcome:
        cur = self.conn.execute(
            "INSERT INTO incidents (host, alarm, source, state, severity, summary, count,"
            " first_seen, last_seen) VALUES (?, ?, ?, 'open', ?, ?, 1, ?, ?) RETURNING *",
            (alert.host, alert.name, alert.source, alert.severity, alert.summary, now, now),
        )
        row = cur.fetchone()
        incident = dict(zip([d[0] for d in cur.description], row, strict=True))
        self.open[key] = incident
        self.touched[incident["id"]] = "post"  # posted once, in its state at commit
        return self._record(alert, now, incident["id"], "opened")

    def _write(self, key: tuple[str, str]) -> None:
        """Write a repeated incident's counters (once per transaction, or before a resolve)."""
        if key not in self.dirty:
            return
        self.dirty.discard(key)
        inc = self.open[key]
        assert inc is not None
        self.conn.execute(
            "UPDATE incidents SET count = ?, last_seen = ?, severity = ?, summary = ?,"
            " message_stale = ? WHERE id = ?",
            (
                inc["count"],
                inc["last_seen"],
                inc["severity"],
                inc["summary"],
                0 if inc["id"] in self.touched else 1,
                inc["id"],
            ),
        )

    def _record(self, alert: Alert, now: str, incident_id: int | None, result: str) -> Outcome:
        self.conn.execute(
            "INSERT INTO alerts (incident_id, received_at, source, host, alarm, status,"
            " severity, summary, details, external_id, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                incident_id,
                now,
                alert.source,
                alert.host,
                alert.name,
                alert.status,
                alert.severity,
                alert.summary,
                _DETAILS.encode(alert.details),
                alert.external_id,
                result,
            ),
        )
        detail = {
            "source": alert.source,
            "alarm": alert.name,
            "status": alert.status,
            "severity": alert.severity,
            "summary": alert.summary,
            "outcome": result,
        }
        if alert.external_id:
            detail["external_id"] = alert.external_id
        audit = self.services.audit
        action = "alert.deduplicated" if result == "deduplicated" else "alert.received"
        audit.append(
            alert.source,
            action,
            host=alert.host,
            incident_id=incident_id,
            detail=detail,
            conn=self.conn,
            ts=now,
        )
        if result in ("opened", "resolved"):
            extra = {"severity": alert.severity} if result == "opened" else {}
            audit.append(
                "system",
                f"incident.{result}",
                host=alert.host,
                incident_id=incident_id,
                detail={"alarm": alert.name, "source": alert.source, **extra},
                conn=self.conn,
                ts=now,
            )
        return Outcome(alert, result, incident_id)

    def finish(self) -> None:
        """Write the counters of repeated incidents, then queue the messages that must go
        out with this commit (new incidents, resolves)."""
        for key in list(self.dirty):
            self._write(key)
        for incident_id, op in self.touched.items():
            incident = _row(self.conn, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
            if incident is not None:
                _queue_message(self.services, self.conn, incident, op)


def _queue_message(
    services: Services, conn: sqlite3.Connection, incident: dict[str, Any], op: str
) -> None:
    if incident.get("message_stale"):
        conn.execute("UPDATE incidents SET message_stale = 0 WHERE id = ?", (incident["id"],))
    text, blocks = incident_message(incident)
    key = message_key(incident["id"])
    if op == "post":
        services.outbox.post(key, services.settings.slack.channel, text, blocks, conn=conn)
    else:
        services.outbox.update(key, text, blocks, conn=conn)


def _row(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = conn.execute(sql, params)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def sync_incident_messages(services: Services) -> int:
    """Queue one update for every incident whose message lags behind (after repeats)."""
    with services.db.transaction() as tx:
        stale = tx.execute("SELECT * FROM incidents WHERE message_stale = 1").fetchall()
        for row in stale:
            _queue_message(services, tx, dict(row), "update")
    return len(stale)


async def incident_message_sync(services: Services, *, every: float = 0.5) -> None:
    """Background job of ``stabilize serve``: refresh lagging incident messages (also right
    after a restart, so a crash between an alert and its message update loses nothing)."""
    while True:
        try:
            sync_incident_messages(services)
        except sqlite3.Error:
            log.exception("could not refresh incident messages")
        await asyncio.sleep(every)


# -- accept: what the routes call -----------------------------------------------------------


def accept(services: Services, alerts: Sequence[Alert]) -> list[Outcome]:
    """Commit ``alerts`` (one transaction for the whole batch), then start diagnoses.

    Returns only after the commit, so a 200 sent after it means the alerts are on disk.
    """
    with services.db.transaction() as tx:
        outcomes = ingest(services, alerts, conn=tx)
    after_commit(services, outcomes)
    return outcomes


def after_commit(services: Services, outcomes: list[Outcome]) -> None:
    """Count the alerts and start the diagnosis of every incident they opened."""
    for outcome in outcomes:
        services.metrics.inc(services.metrics.alerts, outcome.alert.source, outcome.result)
        if outcome.result == "opened" and outcome.incident_id is not None:
            schedule_diagnosis(services, outcome.alert.host, outcome.incident_id)


# -- the diagnosis of a new incident --------------------------------------------------------

DiagnosisHook = Callable[[Services, str, int], Awaitable[None]]


async def run_diagnosis(services: Services, host: str, incident_id: int) -> None:
    """Diagnose ``host`` into the incident's thread; on any failure leave a short note there."""
    thread_key = message_key(incident_id)
    try:
        from bot.diagnosis import diagnose_and_post  # type: ignore[attr-defined]
    except ImportError:
        _note(services, host, incident_id, "diagnosis is not available in this build")
        return
    try:
        await diagnose_and_post(
            services,
            host,
            requested_by="system",
            incident_id=incident_id,
            thread_key=thread_key,
        )
    except StabilizeError as exc:
        _note(services, host, incident_id, str(exc))
    except Exception as exc:
        log.exception("diagnosis of %s for incident %s failed", host, incident_id)
        _note(services, host, incident_id, f"unexpected {type(exc).__name__} (see the bot's log)")


def _note(services: Services, host: str, incident_id: int, reason: str) -> None:
    key = f"{message_key(incident_id)}:diagnosis-note"
    try:
        services.outbox.post(
            key,
            services.settings.slack.channel,
            diagnosis_failed_text(host, reason),
            thread_key=message_key(incident_id),
        )
    except sqlite3.Error:
        log.exception("could not queue the diagnosis note for incident %s", incident_id)


# Swappable (tests put a recorder here so a storm does not start real diagnoses).
diagnosis_hook: DiagnosisHook = run_diagnosis
_running: set[asyncio.Task[None]] = set()


def schedule_diagnosis(services: Services, host: str, incident_id: int) -> None:
    """Start the diagnosis in the background; the HTTP answer does not wait for it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("no event loop: incident %s is not diagnosed automatically", incident_id)
        return
    task = loop.create_task(_guarded(diagnosis_hook, services, host, incident_id))
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _guarded(hook: DiagnosisHook, services: Services, host: str, incident_id: int) -> None:
    try:
        await hook(services, host, incident_id)
    except Exception:
        log.exception("diagnosis hook failed for incident %s", incident_id)
