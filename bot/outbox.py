"""A persisted outbox for every message the bot sends to Slack (or the terminal).

Callers enqueue in SQLite (``post`` / ``update``) — inside their own transaction when they
pass ``conn`` — and return at once. One worker delivers in order through a ``Transport``:

- messages are addressed by a logical ``key`` (``incident:12``, ``request:R-…``); the Slack
  ``ts`` of a posted key is kept in ``slack_messages``, so a key is posted at most once;
- updates coalesce where they are queued: an update of a message whose post has not been
  tried yet rewrites that post, and a newer update supersedes an older pending one, so a storm
  leaves at most one pending update per message; updates of one message go out at most once
  per ``update_interval``;
- posts are paced to one per ``post_interval`` per channel and stay in order per channel;
- a 429 pauses all delivery for its ``Retry-After``; a 5xx or network error reschedules the row
  with exponential backoff (capped at ``MAX_BACKOFF``); a permanent error (``TransportError``)
  marks the row ``failed``, and so do its thread replies and updates, so nothing waits on it.
  A row that keeps failing stops holding up its channel after ``POISON_ATTEMPTS`` tries and is
  given up after ``GIVE_UP_AFTER`` seconds.

Never a duplicate post: a row is claimed (``attempts + 1``, committed) before the call to Slack.
A row claimed before — so Slack may have accepted it although we never recorded the ``ts``
(a crash, a timeout) — is looked up first: each post carries ``metadata`` with its key, and the
transport's ``find_posted`` searches the channel (or the thread) for it. Transports without
``find_posted`` (the terminal) simply post again.
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

from bot.db import Database, iso, parse_iso
from bot.transport import Transport, TransportError, TransportRetry

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
POISON_ATTEMPTS = 5
GIVE_UP_AFTER = 24 * 3600.0
METADATA_EVENT = "stabilize_message"
# Delivery passes are at least this far apart, however often enqueues wake the worker.
MIN_PASS = 0.05


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
        # A process that just started does not know when its predecessor last sent: pace as
        # if everything had been sent at start-up, so the limits hold across a restart.
        self._started = clock()
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
        if conn is not None:
            rowid = self._insert(conn, op, key, channel, thread_key, text, blocks)
        else:
            with self.db.transaction() as tx:
                rowid = self._insert(tx, op, key, channel, thread_key, text, blocks)
        self.wake()
        return rowid

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        op: str,
        key: str,
        channel: str | None,
        thread_key: str | None,
        text: str,
        blocks: list[dict[str, Any]] | None,
    ) -> int:
        blocks_json = json.dumps(blocks) if blocks is not None else None
        if op == "update":
            # Not tried yet: post the newest content in the first place.
            folded = conn.execute(
                "UPDATE outbox SET text = ?, blocks = ? WHERE key = ? AND op = 'post'"
                " AND state = 'pending' AND attempts = 0 RETURNING id",
                (text, blocks_json, key),
            ).fetchone()
            if folded is not None:
                return int(folded[0])
            conn.execute(
                "UPDATE outbox SET state = 'superseded', sent_at = ? WHERE key = ?"
                " AND op = 'update' AND state = 'pending'",
                (iso(), key),
            )
        cur = conn.execute(
            "INSERT INTO outbox (op, key, channel, thread_key, text, blocks, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (op, key, channel, thread_key, text, blocks_json, iso()),
        )
        return int(cur.lastrowid or 0)

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

    def failed(self) -> list[dict[str, Any]]:
        """Rows given up on, with their error (for health checks and tests)."""
        return self.db.query("SELECT * FROM outbox WHERE state = 'failed' ORDER BY id")

    # -- delivery ----------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """One pass over pending rows in order; returns how many were sent."""
        if self.transport is None:
            return 0
        now = self.clock()
        if now < self._paused_until:
            return 0
        rows = self.db.query("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 500")
        blocked_channels: set[str] = set()
        sent = 0
        for r in rows:
            if r["not_before"] > now:
                if r["op"] == "post" and r["channel"] and r["attempts"] < POISON_ATTEMPTS:
                    blocked_channels.add(r["channel"])  # keep the channel's order
                continue
            try:
                done = await self._deliver(r, now, blocked_channels)
            except TransportRetry as exc:
                self._retry_later(r, exc)
                if self.clock() < self._paused_until:
                    return sent
                continue
            except TransportError as exc:
                log.error("slack delivery failed for %s %s: %s", r["op"], r["key"], exc)
                self._finish(r["id"], "failed", str(exc))
                continue
            except (asyncio.CancelledError, sqlite3.Error):
                raise
            except Exception as exc:  # a bug or a surprise answer: back off, never spin
                log.exception("delivering %s %s failed unexpectedly", r["op"], r["key"])
                self._retry_later(r, TransportRetry(f"{type(exc).__name__}: {exc}", 2.0))
                continue
            if done:
                sent += 1
                now = self.clock()
        return sent

    def _retry_later(self, r: dict[str, Any], exc: TransportRetry) -> None:
        now = self.clock()
        age = now - parse_iso(r["created_at"]).timestamp()
        if age > GIVE_UP_AFTER:
            self._finish(r["id"], "failed", f"gave up after {int(age)}s: {exc}")
            return
        rate_limited = "rate limited" in str(exc) or "ratelimited" in str(exc)
        if rate_limited:
            delay = max(exc.after, 0.0)
        else:
            delay = min(MAX_BACKOFF, max(exc.after, 2.0 ** min(r["attempts"], 6)))
        delay += random.uniform(0, 0.1 * delay)
        self._reschedule(r["id"], now + delay, str(exc))
        if rate_limited:
            self._paused_until = now + delay  # Slack asked everyone to wait
        elif r["attempts"] < POISON_ATTEMPTS:
            self._paused_until = now + min(delay, 2.0)  # probably Slack itself: ease off
        log.warning("slack delivery of %s %s deferred %.1fs: %s", r["op"], r["key"], delay, exc)

    async def _deliver(self, r: dict[str, Any], now: float, blocked: set[str]) -> bool:
        if r["op"] == "update":
            return await self._deliver_update(r, now)
        return await self._deliver_post(r, now, blocked)

    async def _deliver_update(self, r: dict[str, Any], now: float) -> bool:
        assert self.transport is not None
        target = self.message(r["key"])
        if target is None:
            gone = self._never_posted(r["key"])
            if gone:
                self._finish(r["id"], "failed", gone)
            return False  # its post has not been delivered yet
        if now - self._last_update.get(r["key"], self._started) < self.update_interval:
            return False  # coalesce: a newer update may still replace this one
        row = self._claim(r["id"])
        if row is None:
            return False  # superseded while we were busy
        await self.transport.update(target["channel"], target["ts"], row["text"], row["blocks"])
        self._last_update[r["key"]] = self.clock()
        self._finish(r["id"], "sent")
        self._notify("update", r["key"])
        return True

    async def _deliver_post(self, r: dict[str, Any], now: float, blocked: set[str]) -> bool:
        assert self.transport is not None
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
                gone = self._never_posted(r["thread_key"])
                if gone:
                    self._finish(r["id"], "failed", f"thread parent: {gone}")
                    return False
                blocked.add(channel)  # keep channel order: wait for the parent
                return False
            thread_ts = parent["ts"]
        if now - self._last_post.get(channel, self._started) < self.post_interval:
            blocked.add(channel)
            return False
        tried_before = r["attempts"] > 0
        row = self._claim(r["id"])
        if row is None:
            return False
        ts = None
        if tried_before:
            ts = await self._find_posted(channel, r["key"], thread_ts)
        if ts is None:
            ts = await self.transport.post(
                channel,
                row["text"],
                row["blocks"],
                thread_ts=thread_ts,
                metadata={"event_type": METADATA_EVENT, "event_payload": {"key": r["key"]}},
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

    async def _find_posted(self, channel: str, key: str, thread_ts: str | None) -> str | None:
        """The ``ts`` of an earlier attempt that reached Slack after all, if any."""
        finder = getattr(self.transport, "find_posted", None)
        if finder is None:
            return None
        try:
            ts = await finder(channel, key, thread_ts=thread_ts)
        except TransportError as exc:
            # e.g. missing_scope (channels:history): we cannot tell; posting is the lesser harm.
            log.warning("cannot check whether %s was already posted: %s", key, exc)
            return None
        if ts:
            log.info("%s was already posted (ts %s): recorded, not posted again", key, ts)
        return str(ts) if ts else None

    def _claim(self, row_id: int) -> dict[str, Any] | None:
        """Count the attempt (committed before the call) and read the row's newest content."""
        with self.db.transaction() as tx:
            claimed = tx.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ? AND state = 'pending'"
                " RETURNING text, blocks",
                (row_id,),
            ).fetchone()
        if claimed is None:
            return None
        blocks = json.loads(claimed[1]) if claimed[1] else None
        return {"text": claimed[0], "blocks": blocks}

    def _never_posted(self, key: str) -> str | None:
        """Why ``key`` will never exist in Slack (its post failed or was never queued)."""
        row = self.db.query_one(
            "SELECT state, error FROM outbox WHERE key = ? AND op = 'post'"
            " ORDER BY id DESC LIMIT 1",
            (key,),
        )
        if row is None:
            return f"no message was ever queued under {key}"
        if row["state"] == "failed":
            return f"the post of {key} failed ({row['error']})"
        return None

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
                "UPDATE outbox SET not_before = ?, error = ? WHERE id = ?",
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
            await asyncio.sleep(MIN_PASS)
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
