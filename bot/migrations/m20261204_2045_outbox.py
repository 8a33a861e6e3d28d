"""The persisted Slack outbox and the map of our logical message keys to Slack ts."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE slack_messages (
            key TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            ts TEXT NOT NULL,
            thread_ts TEXT,
            posted_at TEXT NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            op TEXT NOT NULL CHECK (op IN ('post', 'update')),
            key TEXT NOT NULL,
            channel TEXT,
            thread_key TEXT,
            text TEXT NOT NULL,
            blocks TEXT,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sent', 'superseded', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            not_before REAL NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            error TEXT
        )
        """
    )
    conn.execute("CREATE INDEX outbox_state_id ON outbox (state, id)")
    conn.execute("CREATE INDEX outbox_key ON outbox (key, state)")
