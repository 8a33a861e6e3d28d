"""Mark incidents whose Slack message lags behind their row (refreshed in the background)."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE incidents ADD COLUMN message_stale INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX incidents_message_stale ON incidents (id) WHERE message_stale = 1")
