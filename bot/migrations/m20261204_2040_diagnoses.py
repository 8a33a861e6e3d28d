"""Diagnoses and the runbooks they recommend (a recommendation button carries its id)."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE diagnoses (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            host TEXT NOT NULL,
            created_at TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            incident_id TEXT,
            thread_key TEXT,
            channel TEXT,
            result TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX diagnoses_host ON diagnoses (host, created_at)")
    conn.execute("CREATE INDEX diagnoses_incident ON diagnoses (incident_id)")
    conn.execute(
        """
        CREATE TABLE recommendations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            diagnosis_id INTEGER NOT NULL REFERENCES diagnoses (id),
            position INTEGER NOT NULL,
            host TEXT NOT NULL,
            runbook TEXT NOT NULL,
            params TEXT NOT NULL,
            reason TEXT NOT NULL,
            evidence TEXT NOT NULL,
            incident_id TEXT,
            thread_key TEXT,
            created_at TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX recommendations_diagnosis ON recommendations (diagnosis_id)")
