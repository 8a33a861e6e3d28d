"""Approval requests, who approved them, and the Slack deliveries already handled.

A request's ``state`` is the one thing that decides whether a runbook runs: the change from
``pending`` is a conditional UPDATE that only one caller can win (bot/approvals.py).
"""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            runbook TEXT NOT NULL,
            host TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            raw_params TEXT NOT NULL DEFAULT '{}',
            requested_by TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            evidence TEXT NOT NULL DEFAULT 'null',
            plan TEXT NOT NULL DEFAULT '',
            incident_id TEXT,
            channel TEXT NOT NULL,
            thread_key TEXT,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN (
                'pending', 'approved', 'running', 'succeeded', 'failed', 'rolled_back',
                'rejected', 'expired', 'interrupted')),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            decided_by TEXT,
            decided_at TEXT,
            finished_at TEXT,
            result TEXT
        )
        """
    )
    conn.execute("CREATE INDEX requests_state_expires ON requests (state, expires_at)")
    conn.execute(
        """
        CREATE TABLE approvals (
            request_id TEXT NOT NULL REFERENCES requests (id),
            user TEXT NOT NULL,
            ts TEXT NOT NULL,
            UNIQUE (request_id, user)
        )
        """
    )
    # trigger_id of every slash command / click handled: a retried delivery is skipped.
    conn.execute("CREATE TABLE slack_deliveries (key TEXT PRIMARY KEY, seen_at TEXT NOT NULL)")
