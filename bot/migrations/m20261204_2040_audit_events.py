"""The append-only, hash-chained audit log (see bot/audit.py for the chain)."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            host TEXT,
            runbook TEXT,
            request_id TEXT,
            incident_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX audit_events_ts ON audit_events (ts)")
    conn.execute("CREATE INDEX audit_events_host_ts ON audit_events (host, ts)")
    conn.execute("CREATE INDEX audit_events_incident ON audit_events (incident_id)")
    conn.execute("CREATE INDEX audit_events_request ON audit_events (request_id)")
    conn.execute("CREATE INDEX audit_events_action ON audit_events (action)")
    conn.execute(
        """
        CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END
        """
    )
