"""Schema changes as small registered migrations.

Each module in this package named ``mYYYYMMDD_HHMM_<what>.py`` (UTC) defines
``up(conn: sqlite3.Connection) -> None``. They run once each, in name order, inside one
``BEGIN IMMEDIATE`` so two processes starting together cannot both migrate. Applied names are
kept in ``_migrations``. Never edit a migration that has landed: add a new one.
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3
from typing import TYPE_CHECKING

from bot.db import iso

if TYPE_CHECKING:
    from bot.db import Database


def available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("m") and not m.ispkg
    )


def apply_migrations(db: Database) -> list[str]:
    """Apply what is missing; return the names applied now."""
    conn = db.conn
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations"
            " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
    except sqlite3.Error as exc:
        from bot.errors import ConfigError

        raise ConfigError(
            f"cannot use the database {db.path}: {exc} (set STABILIZE_DB to a writable path)"
        ) from None
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    todo = [n for n in available() if n not in done]
    if not todo:
        return []
    applied = []
    with db.transaction() as tx:
        done = {r[0] for r in tx.execute("SELECT name FROM _migrations")}
        for name in todo:
            if name in done:
                continue
            module = importlib.import_module(f"{__name__}.{name}")
            module.up(tx)
            tx.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, iso()))
            applied.append(name)
    return applied
