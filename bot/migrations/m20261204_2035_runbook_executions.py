"""Runbook executions, their steps, and the per-host lock (one runbook at a time per host).

The lock lives in SQLite so it survives a restart; ``recover_interrupted`` frees the locks of
executions whose process is gone.
"""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE executions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL UNIQUE,
            runbook TEXT NOT NULL,
            host TEXT NOT NULL,
            params TEXT NOT NULL,
            requested_by TEXT,
            incident_id TEXT,
            state TEXT NOT NULL CHECK (state IN
                ('running', 'succeeded', 'failed', 'rolled_back', 'interrupted', 'dry_run')),
            node TEXT NOT NULL,
            pid INTEGER NOT NULL,
            proc_start TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            failed_step TEXT,
            error TEXT,
            summary TEXT
        )
        """
    )
    conn.execute("CREATE INDEX executions_state ON executions (state)")
    conn.execute(
        """
        CREATE TABLE execution_steps (
            execution_id INTEGER NOT NULL REFERENCES executions (id),
            n INTEGER NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration REAL,
            output TEXT,
            PRIMARY KEY (execution_id, n)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE host_locks (
            host TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            runbook TEXT NOT NULL,
            holder TEXT,
            since TEXT NOT NULL,
            execution_id INTEGER NOT NULL REFERENCES executions (id)
        )
        """
    )
