"""Look alerts up by the sender's id (agent replays, SNS redeliveries)."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX alerts_external_id ON alerts (external_id)")
