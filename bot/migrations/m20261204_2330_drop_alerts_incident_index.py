"""Drop the index on alerts.incident_id: nothing looks alerts up by incident (the timeline
reads the audit log), and keeping it cost every alert an insert into a page per incident."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute("DROP INDEX IF EXISTS alerts_incident")
