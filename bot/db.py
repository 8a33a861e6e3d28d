"""The SQLite file behind the audit log and all state: WAL mode, one connection per thread.

Writers take ``BEGIN IMMEDIATE`` (``Database.transaction``) so that SQLite itself serialises
them, across threads and processes alike; nothing relies on an in-memory flag.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from bot.errors import ConfigError

BUSY_TIMEOUT_MS = 30_000
# SQLite's default: the commit that grows the WAL past this many pages copies it back into
# the database file (and syncs it) before it returns.
AUTOCHECKPOINT_PAGES = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None = None) -> str:
    """UTC ISO 8601 with microseconds and a ``Z``: sorts as text, parses everywhere."""
    dt = (dt or utcnow()).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class Database:
    """One SQLite file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: str | Path, *, migrate: bool = True) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._autocheckpoint = AUTOCHECKPOINT_PAGES
        if migrate:
            from bot.migrations import apply_migrations

            apply_migrations(self)

    def _open(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            parent = self.path.parent
            if not parent.is_dir():
                raise ConfigError(
                    f"cannot open the database {self.path}: folder {parent} does not exist "
                    "(set STABILIZE_DB to a writable path)"
                )
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(self._autocheckpoint)}")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the database {self.path}: {exc} (set STABILIZE_DB to a writable path)"
            ) from None
        conn.row_factory = sqlite3.Row
        with self._lock:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    @property
    def utils(self) -> sqlite_utils.Database:
        """A sqlite-utils view over this thread's connection."""
        db = getattr(self._local, "utils", None)
        if db is None:
            db = sqlite_utils.Database(self.conn)
            self._local.utils = db
        return db

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception. Not re-entrant."""
        conn = self.conn
        if conn.in_transaction:
            # Nested use would silently join the outer transaction; refuse loudly instead.
            raise RuntimeError("Database.transaction() is not re-entrant")
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def defer_checkpoints(self, pages: int = 10_000) -> None:
        """For a server that calls ``checkpoint`` from a worker thread: commits then only
        checkpoint themselves (on the request path) once the WAL passes ``pages`` pages, a
        safety net should the worker fall behind. Applies to this thread's connection and to
        connections opened from now on (another thread's connection is that thread's)."""
        self._autocheckpoint = pages
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def checkpoint(self) -> tuple[int, int]:
        """Copy committed WAL pages back into the database file without blocking readers
        or writers (``PASSIVE``). Returns (pages in the WAL, pages copied). Meant for a
        worker thread: SQLite does the I/O and syncs with Python's GIL released."""
        _busy, log_pages, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return log_pages, copied

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def query_one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def ping(self) -> bool:
        try:
            self.conn.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
