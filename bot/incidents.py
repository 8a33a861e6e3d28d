"""Alerts grouped into incidents: one open incident, and one Slack message, per host + alarm.

``ingest`` runs inside the caller's transaction, so an alert's row, its audit events, the
incident change and the Slack message (queued in the outbox) commit together — before the
HTTP answer — or not at all. ``accept`` is what the intake routes call: it owns that
transaction and, after the commit, starts the diagnosis of every newly opened incident.

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
    """Record ``alerts`` in order and apply them to incidents, all through ``conn``."""
    return [_ingest_one(services, alert, conn) for alert in alerts]


def _ingest_one(services: Services, alert: Alert, conn: sqlite3.Connection) -> Outcome:
    now = iso()
    current = _row(
        conn,
        "SELECT * FROM incidents WHERE host = ? AND alarm = ? AND state = 'open'",
        (alert.host, alert.name),
    )
    if alert.firing:
        if current is None:
            return _open(services, alert, conn, now)
        severity = max(current["severity"], alert.severity, key=lambda s: _RANK.get(s, 1))
        conn.execute(
            "UPDATE incidents SET count = count + 1, last_seen = ?, severity = ?,"
            " summary = ? WHERE id = ?",
            (now, severity, alert.summary or current["summary"], current["id"]),
        )
        return _record(services, alert, conn, now, current["id"], "deduplicated")
    if current is not None:
        conn.execute(
            "UPDATE incidents SET state = 'resolved', resolved_at = ?, last_seen = ? WHERE id = ?",
            (now, now, current["id"]),
        )
        return _record(services, alert, conn, now, current["id"], "resolved")
    # A resolve for nothing open: a repeat of one we already applied, or for an alarm we never
    # saw firing. Either way it is recorded, and changes no incident.
    last = _row(
        conn,
        "SELECT id FROM incidents WHERE host = ? AND alarm = ? ORDER BY id DESC LIMIT 1",
        (alert.host, alert.name),
    )
    if last is not None:
        return _record(services, alert, conn, now, last["id"], "deduplicated", message=False)
    return _record(services, alert, conn, now, None, "ignored", message=False)


def _open(services: Services, alert: Alert, conn: sqlite3.Connection, now: str) -> Outcome:
    cur = conn.execute(
        "INSERT INTO incidents (host, alarm, source, state, severity, summary, count,"
        " first_seen, last_seen) VALUES (?, ?, ?, 'open', ?, ?, 1, ?, ?)",
        (alert.host, alert.name, alert.source, alert.severity, alert.summary, now, now),
    )
    incident_id = int(cur.lastrowid or 0)
    return _record(services, alert, conn, now, incident_id, "opened")


def _record(
    services: Services,
    alert: Alert,
    conn: sqlite3.Connection,
    now: str,
    incident_id: int | None,
    result: str,
    *,
    message: bool = True,
) -> Outcome:
    conn.execute(
        "INSERT INTO alerts (incident_id, received_at, source, host, alarm, status, severity,"
        " summary, details, external_id, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            incident_id,
            now,
            alert.source,
            alert.host,
            alert.name,
            alert.status,
            alert.severity,
            alert.summary,
            json.dumps(alert.details, default=str, separators=(",", ":")),
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
    audit = services.audit
    action = "alert.deduplicated" if result == "deduplicated" else "alert.received"
    audit.append(
        alert.source, action, host=alert.host, incident_id=incident_id, detail=detail, conn=conn
    )
    if result == "opened":
        audit.append(
            "system",
            "incident.opened",
            host=alert.host,
            incident_id=incident_id,
            detail={"alarm": alert.name, "severity": alert.severity, "source": alert.source},
            conn=conn,
        )
    elif result == "resolved":
        audit.append(
            "system",
            "incident.resolved",
            host=alert.host,
            incident_id=incident_id,
            detail={"alarm": alert.name, "source": alert.source},
            conn=conn,
        )
    if message and incident_id is not None:
        incident = _row(conn, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
        assert incident is not None
        text, blocks = incident_message(incident)
        key = message_key(incident_id)
        if result == "opened":
            services.outbox.post(key, services.settings.slack.channel, text, blocks, conn=conn)
        else:
            services.outbox.update(key, text, blocks, conn=conn)
    return Outcome(alert, result, incident_id)


def _row(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = conn.execute(sql, params)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


# -- accept: what the routes call -----------------------------------------------------------


def accept(services: Services, alerts: Sequence[Alert]) -> list[Outcome]:
    """Commit ``alerts`` (one transaction for the whole batch), then start diagnoses.

    Returns only after the commit, so a 200 sent after it means the alerts are on disk.
    """
    with services.db.transaction() as tx:
        outcomes = ingest(services, alerts, conn=tx)
    for outcome in outcomes:
        services.metrics.alerts.labels(outcome.alert.source, outcome.result).inc()
        if outcome.result == "opened" and outcome.incident_id is not None:
            schedule_diagnosis(services, outcome.alert.host, outcome.incident_id)
    return outcomes


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
