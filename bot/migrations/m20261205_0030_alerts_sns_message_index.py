"""Index only the SNS MessageIds (redeliveries are looked up by them). Agent request ids are
checked by the in-memory replay guard (see bot.intake.agent.ReplayGuard): indexed, their
random values put every alert's insert on its own index page."""

import sqlite3


def up(conn: sqlite3.Connection) -> None:
    conn.execute("DROP INDEX IF EXISTS alerts_external_id")
    conn.execute("CREATE INDEX alerts_sns_message ON alerts (external_id) WHERE source = 'sns'")
