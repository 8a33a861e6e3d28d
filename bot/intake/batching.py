"""Group commit for the alert routes: the alerts of requests that arrive together are
committed in one SQLite transaction, and each request is answered after that commit.

A storm of single-alert requests then costs one commit per batch instead of one per alert,
and an incident repeated within a batch is written once. One failing request fails alone:
if the shared transaction fails, each request is retried in its own.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence

from bot.incidents import Outcome, after_commit, ingest
from bot.intake.model import Alert
from bot.services import Services

log = logging.getLogger(__name__)

MAX_BATCH = 256  # requests: commit without waiting for more
QUIET_PASSES = 3  # loop passes without a new request before the commit


async def accept_async(services: Services, alerts: Sequence[Alert]) -> list[Outcome]:
    """``accept`` for the HTTP routes: requests that arrive together share one transaction
    (group commit). Returns after the commit that holds ``alerts``."""
    batcher = getattr(services, "_intake_batcher", None)
    loop = asyncio.get_running_loop()
    if batcher is None or batcher.loop is not loop:
        batcher = _Batcher(services, loop)
        setattr(services, "_intake_batcher", batcher)  # noqa: B010 - not a Services field
    outcomes = await batcher.submit(list(alerts))
    after_commit(services, outcomes)
    return outcomes


class _Batcher:
    """Collects the alerts of concurrent requests and commits them together, one batch at a
    time (see ``_commit_batch`` for how one failing request fails alone).

    The commit runs on the event loop once a few loop passes brought no new request:
    a worker thread would fight the loop for the GIL and lose more than it gains (measured:
    slower), while a batch commit costs about a millisecond and the requests that arrive
    meanwhile simply wait in their sockets to form the next batch."""

    def __init__(self, services: Services, loop: asyncio.AbstractEventLoop) -> None:
        self.services = services
        self.loop = loop
        self.waiting: list[tuple[list[Alert], asyncio.Future[list[Outcome]]]] = []
        self.running = False
        self.seen = 0
        self.quiet = 0

    async def submit(self, alerts: list[Alert]) -> list[Outcome]:
        future: asyncio.Future[list[Outcome]] = self.loop.create_future()
        self.waiting.append((alerts, future))
        if not self.running:
            self.running = True
            self.seen = self.quiet = 0
            self.loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        # Requests keep joining while loop passes bring more (a handler runs one pass after
        # its bytes arrive); commit after QUIET_PASSES passes that bring none, or once full.
        # Each pass costs a poll of the sockets, microseconds; each commit, hundreds.
        waiting = len(self.waiting)
        if waiting < MAX_BATCH and (waiting > self.seen or self.quiet < QUIET_PASSES):
            self.quiet = 0 if waiting > self.seen else self.quiet + 1
            self.seen = waiting
            self.loop.call_soon(self._flush)
            return
        batch, self.waiting = self.waiting, []
        self.running = False
        if not batch:
            return
        results: list[list[Outcome] | Exception]
        try:
            results = _commit_batch(self.services, [alerts for alerts, _ in batch])
        except Exception as exc:  # the whole transaction failed: nothing committed
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _commit_batch(services: Services, batch: list[list[Alert]]) -> list[list[Outcome] | Exception]:
    """All requests in one transaction; if that fails, each in its own, so that one failing
    request fails alone (and nothing of it is half-committed)."""
    try:
        with services.db.transaction() as tx:
            results: list[list[Outcome] | Exception] = list(_ingest_requests(services, tx, batch))
        return results
    except Exception:
        if len(batch) == 1:
            raise
    results = []
    for alerts in batch:
        try:
            with services.db.transaction() as tx:
                results.append(ingest(services, alerts, conn=tx))
        except Exception as exc:
            log.exception("could not record %d alert(s)", len(alerts))
            results.append(exc)
    return results


def _ingest_requests(
    services: Services, conn: sqlite3.Connection, batch: list[list[Alert]]
) -> list[list[Outcome]]:
    """All requests' alerts through one ``ingest``, its outcomes split back per request."""
    outcomes = iter(ingest(services, [alert for alerts in batch for alert in alerts], conn=conn))
    return [[next(outcomes) for _ in alerts] for alerts in batch]
