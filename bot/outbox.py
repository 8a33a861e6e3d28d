"""A persisted outbox for every message the bot sends to Slack (or the terminal).

Callers enqueue in SQLite (``post`` / ``update``) — inside their own transaction when they
pass ``conn`` — and return at once. One worker delivers in order through a ``Transport``:

- messages are addressed by a logical ``key`` (``incident:12``, ``request:R-…``); the Slack
  ``ts`` of a posted key is kept in ``slack_messages``, so a key is posted at most once;
- an ``update`` waits until its message exists and only the newest pending update of a key is
  sent (older ones are ``superseded``), at most one per ``update_interval`` per key;
- posts are paced to one per ``post_interval`` per channel and stay in order per channel;
- ``TransportRetry`` (429 ``Retry-After``, 5xx, network) reschedules the row and pauses
  delivery; ``TransportError`` marks it failed with the error. Nothing is dropped on a crash:
  pending rows are simply delivered after the restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from bot.db import Database, iso
from bot.transport import Transport, TransportError, TransportRetry

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


class Outbox:
    def __init__(
        self,
        db: Database,
        transport: Transport | None = None,
        *,
        post_interval: float = 1.0,
        update_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_delivered: Callable[[str, str], None] | None = None,
    ) -> None:
        self.db = db
        self.transport = transport
        self.post_interval = post_interval
        self.update_interval = update_interval
        self.clock = clock
        self._on_delivered = on_delivered  # callback(op, key), e.g. metrics
        self._last_post: dict[str, float] = {}  # channel -> time of last post
        self._last_update: dict[str, float] = {}  # key -> time of last update
        self._paused_until = 0.0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- enqueue (sync, cheap, safe from any thread) --------------------------------------

    def post(
        self,
        key: str,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        thread_key: str | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> int:
        """Queue a new message under ``key`` (in ``thread_key``'s thread if given)."""
        return self._enqueue("post", key, channel, thread_key, text, blocks, conn)

    def update(
        self,
        key: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        conn: sqlite3.Connection | None = None,
    ) -> int:
        """Queue a replacement of the message posted under ``key``."""
        return self._enqueue("update", key, None, None, text, blocks, conn)

    def _enqueue(
        self,
        op: str,
        key: str,
        channel: str | None,
        thread_key: str | None,
        text: str,
        blocks: list[dict[str, Any]] | None,
        conn: sqlite3.Connection | None,
    ) -> int:
        sql = (
            "INSERT INTO outbox (op, key, channel, thread_key, text, blocks, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        args = (
            op,
            key,
            channel,
            thread_key,
            text,
            json.dumps(blocks) if blocks is not None else None,
            iso(),
        )
        if conn is not None:
            rowid = conn.execute(sql, args).lastrowid
        else:
            with self.db.transaction() as tx:
                rowid = tx.execute(sql, args).lastrowid
        self.wake()
        return int(rowid or 0)

    def wake(self) -> None:
        if self._wake is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # loop closed
            pass

    # -- reading ---------------------------------------------------------------------------

    def message(self, key: str) -> dict[str, Any] | None:
        """``{"key", "channel", "ts", "thread_ts"}`` once the message under ``key`` exists."""
        return self.db.query_one("SELECT * FROM slack_messages WHERE key = ?", (key,))

    def pending(self) -> int:
        row = self.db.query_one("SELECT count(*) AS n FROM outbox WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    # -- delivery ----------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """One pass over pending rows in order; returns how many were sent."""
        if self.transport is None:
            return 0
        now = self.clock()
        if now < self._paused_until:
            return 0
        rows = self.db.query("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 500")
        latest_update: dict[str, int] = {}
        for r in rows:
            if r["op"] == "update":
                latest_update[r["key"]] = r["id"]
        blocked_channels: set[str] = set()
        sent = 0
        for r in rows:
            if r["op"] == "update" and latest_update.get(r["key"]) != r["id"]:
                self._finish(r["id"], "superseded")
                continue
            if r["not_before"] > now:
                if r["op"] == "post" and r["channel"]:
                    blocked_channels.add(r["channel"])
                continue
            try:
                done = await self._deliver(r, now, blocked_channels)
            except TransportRetry as exc:
                backoff = min(MAX_BACKOFF, max(exc.after, 2.0 ** min(r["attempts"], 6)))
                delay = exc.after if "rate limited" in str(exc) else backoff
                delay += random.uniform(0, 0.1 * delay)
                self._reschedule(r["id"], now + delay, str(exc))
                self._paused_until = now + delay
                log.warning("slack delivery deferred %.1fs: %s", delay, exc)
                return sent
            except TransportError as exc:
                log.error("slack delivery failed for %s %s: %s", r["op"], r["key"], exc)
                self._finish(r["id"], "failed", str(exc))
                continue
            if done:
                sent += 1
                now = self.clock()
        return sent

    async def _deliver(self, r: dict[str, Any], now: float, blocked: set[str]) -> bool:
        assert self.transport is not None
        blocks = json.loads(r["blocks"]) if r["blocks"] else None
        if r["op"] == "update":
            target = self.message(r["key"])
            if target is None:
                return False  # its post has not been delivered yet
            if now - self._last_update.get(r["key"], 0.0) < self.update_interval:
                return False  # coalesce: a newer update may still replace this one
            await self.transport.update(target["channel"], target["ts"], r["text"], blocks)
            self._last_update[r["key"]] = self.clock()
            self._finish(r["id"], "sent")
            self._notify("update", r["key"])
            return True
        channel = r["channel"]
        if self.message(r["key"]) is not None:
            self._finish(r["id"], "sent", "already posted")  # never post a key twice
            return False
        if channel in blocked:
            return False
        thread_ts = None
        if r["thread_key"]:
            parent = self.message(r["thread_key"])
            if parent is None:
                blocked.add(channel)  # keep channel order: wait for the parent
                return False
            thread_ts = parent["ts"]
        if now - self._last_post.get(channel, 0.0) < self.post_interval:
            blocked.add(channel)
            return False
        with self.db.transaction() as tx:
            tx.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (r["id"],))
        ts = await self.transport.post(
            channel,
            r["text"],
            blocks,
            thread_ts=thread_ts,
            metadata={"event_type": "stabilize_message", "event_payload": {"key": r["key"]}},
        )
        self._last_post[channel] = self.clock()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO slack_messages (key, channel, ts, thread_ts, posted_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (r["key"], channel, ts, thread_ts, iso()),
            )
            tx.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ? WHERE id = ?", (iso(), r["id"])
            )
        self._notify("post", r["key"])
        return True

    def _notify(self, op: str, key: str) -> None:
        if self._on_delivered:
            self._on_delivered(op, key)

    def _finish(self, row_id: int, state: str, error: str | None = None) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET state = ?, sent_at = ?, error = ? WHERE id = ?",
                (state, iso(), error, row_id),
            )

    def _reschedule(self, row_id: int, not_before: float, error: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, not_before = ?, error = ? WHERE id = ?",
                (not_before, error, row_id),
            )

    async def run(self, *, idle: float = 0.25) -> None:
        """Deliver forever (the server's background task). Cancel to stop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep delivering whatever one row did
                log.exception("outbox pass failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=idle)
            except TimeoutError:
                pass

    async def drain(self, timeout: float = 30.0) -> bool:
        """Deliver until nothing is pending (or ``timeout``); True when all went out."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            sent = await self.deliver_due()
            if not sent:
                await asyncio.sleep(0.05)
        return True
