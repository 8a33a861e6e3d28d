"""Audit review in Datasette (the ``browse`` extra): metadata and canned queries.

Datasette opens a file it was not told is immutable with ``?mode=ro``: a read-only connection
that still sees rows waiting in the WAL. (``--immutable`` would skip the WAL and miss the
newest events of a running bot.) Nothing here writes to the database, so plain ``sqlite3`` and
``sqlite-utils`` keep working on the same file, even while the review is open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.errors import ConfigError

INSTALL_HINT = "pip install -e '.[browse]'"

# Requests map to incidents through their request.created row; execution rows may carry only
# the request id.
_WITH_INCIDENT = """
WITH req AS (
  SELECT request_id, max(incident_id) AS incident_id FROM audit_events
  WHERE incident_id IS NOT NULL AND request_id IS NOT NULL GROUP BY request_id
), ev AS (
  SELECT e.*, coalesce(e.incident_id, req.incident_id) AS inc
  FROM audit_events e LEFT JOIN req ON e.request_id = req.request_id
)
"""

QUERIES: dict[str, dict[str, Any]] = {
    "incidents": {
        "title": "Incidents",
        "description": "One row per incident: first alert, mitigation, resolution, outcome.",
        "sql": _WITH_INCIDENT
        + """SELECT inc AS incident_id, max(host) AS host,
  min(CASE WHEN action IN ('alert.received', 'incident.opened') THEN ts END) AS first_alert,
  min(CASE WHEN action = 'execution.succeeded' THEN ts END) AS mitigated_at,
  max(CASE WHEN action = 'incident.resolved' THEN ts END) AS resolved_at,
  sum(action = 'alert.received') AS alerts,
  sum(action = 'request.created') AS requests,
  sum(action = 'execution.succeeded') AS succeeded,
  sum(action IN ('execution.failed', 'execution.rolled_back', 'execution.interrupted'))
    AS failed,
  group_concat(DISTINCT actor) AS actors
FROM ev WHERE inc IS NOT NULL GROUP BY inc ORDER BY max(id) DESC""",
    },
    "approvals": {
        "title": "Who approved what",
        "description": "Every approval, rejection and refused approval, with who asked.",
        "sql": """SELECT d.ts, d.action AS decision, d.actor AS decided_by,
  c.actor AS requested_by, coalesce(d.runbook, c.runbook) AS runbook,
  coalesce(d.host, c.host) AS host, d.request_id,
  coalesce(d.incident_id, c.incident_id) AS incident_id
FROM audit_events d
LEFT JOIN audit_events c ON c.request_id = d.request_id AND c.action = 'request.created'
WHERE d.action IN ('request.approved', 'request.rejected', 'request.denied')
ORDER BY d.id DESC""",
    },
    "failed_executions": {
        "title": "Failed and rolled-back executions",
        "description": "Runbook runs that failed, were rolled back or were interrupted.",
        "sql": _WITH_INCIDENT
        + """SELECT ts, action, host, runbook, request_id, inc AS incident_id,
  coalesce(json_extract(detail, '$.error'), json_extract(detail, '$.reason')) AS error
FROM ev
WHERE action IN ('execution.failed', 'execution.rolled_back', 'execution.interrupted')
ORDER BY id DESC""",
    },
    "per_host": {
        "title": "Per host",
        "description": "Alerts, incidents and runbook outcomes for each host.",
        "sql": """SELECT host, count(*) AS events,
  sum(action = 'alert.received') AS alerts,
  count(DISTINCT incident_id) AS incidents,
  sum(action = 'execution.succeeded') AS succeeded,
  sum(action IN ('execution.failed', 'execution.rolled_back')) AS failed,
  max(ts) AS last_event
FROM audit_events WHERE host IS NOT NULL GROUP BY host ORDER BY last_event DESC""",
    },
    "host_events": {
        "title": "Events of one host",
        "description": "Everything that happened to a host, newest first.",
        "sql": """SELECT id, ts, actor, action, runbook, request_id, incident_id, detail
FROM audit_events WHERE host = :host ORDER BY id DESC LIMIT 500""",
    },
}

COLUMN_HELP = {
    "id": "Position in the hash chain.",
    "ts": "When (UTC, ISO 8601).",
    "actor": "Slack user id, system, sns, alertmanager, agent or cli:<login>.",
    "action": "What happened (alert.received, request.approved, execution.succeeded, …).",
    "host": "The host concerned.",
    "runbook": "The runbook concerned.",
    "request_id": "The approval request.",
    "incident_id": "The incident.",
    "detail": "JSON details; secrets are scrubbed before they are written.",
    "prev_hash": "Hash of the previous event.",
    "hash": "SHA-256 over prev_hash and this row; `stabilize audit verify` checks the chain.",
}


def database_name(path: Path) -> str:
    """The name Datasette gives a database file (its stem)."""
    return path.stem


def metadata(path: Path) -> dict[str, Any]:
    return {
        "title": "stabilize audit log",
        "description": (
            "Read-only review of the append-only, hash-chained audit log. "
            "Run `stabilize audit verify` to check the chain, "
            "`stabilize audit timeline <incident-id>` for one incident's story."
        ),
        "databases": {
            database_name(path): {
                "tables": {
                    "audit_events": {
                        "description": "Every alert, decision and runbook step, in order.",
                        "sort_desc": "id",
                        "columns": COLUMN_HELP,
                    },
                    "_migrations": {"hidden": True},
                },
                "queries": QUERIES,
            }
        },
    }


def datasette_missing() -> str | None:
    try:
        import datasette.app  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return f"audit browse needs the 'browse' extra (Datasette): {INSTALL_HINT}"
    return None


def serve(path: Path, *, port: int, open_browser: bool = False) -> None:
    """Serve ``path`` read-only on 127.0.0.1:``port`` until interrupted."""
    hint = datasette_missing()
    if hint:
        raise ConfigError(hint)
    import socket

    import uvicorn
    from datasette.app import Datasette

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is in use; pick another with --port"
            ) from None
    ds = Datasette([str(path)], metadata=metadata(path), settings={"sql_time_limit_ms": 3000})
    url = f"http://127.0.0.1:{port}/{database_name(path)}"
    print(f"Audit review (read-only) at {url} — Ctrl-C to stop", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(ds.app(), host="127.0.0.1", port=port, log_level="warning")
