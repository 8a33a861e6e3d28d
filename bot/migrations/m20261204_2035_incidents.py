"""Incidents (one open per host + alarm) and every alert that reached them."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            host TEXT NOT NULL,
            alarm TEXT NOT NULL,
            source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
            severity TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '',
            count INTEGER NOT NULL DEFAULT 1,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            resolved_at TEXT
        )
        """
    )
    # The database itself guarantees one open incident per key, whatever the callers do.
    conn.execute(
        "CREATE UNIQUE INDEX incidents_one_open ON incidents (host, alarm) WHERE state = 'open'"
    )
    conn.execute("CREATE INDEX incidents_host ON incidents (host, first_seen)")
    conn.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id INTEGER REFERENCES incidents (id),
            received_at TEXT NOT NULL,
            source TEXT NOT NULL,
            host TEXT NOT NULL,
            alarm TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
            severity TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '',
            details TEXT NOT NULL DEFAULT '{}',
            external_id TEXT,
            outcome TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX alerts_incident ON alerts (incident_id)")
