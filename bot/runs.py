"""Running an approved request through the runbook engine (``services.engine``).

Only the caller that won the ``pending → running`` transition (bot/approvals.py) gets here.
Progress goes into the request message's thread, the final state onto the message itself.
In a dry run the plan is posted and nothing runs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from bot import approvals
from bot.db import iso, parse_iso, utcnow
from bot.services import Services

log = logging.getLogger(__name__)

# Tasks must be referenced until done, or asyncio may collect them mid-run.
_TASKS: set[asyncio.Task[Any]] = set()
# Requests this process is executing right now (housekeeping leaves them alone).
_RUNNING: set[str] = set()
# A request approved this long ago with no execution recorded lost its process.
STALL_GRACE = 600.0


@dataclass(frozen=True)
class _Job:
    """Stand-in for runbooks.engine.ExecutionRequest while that module is not importable."""

    request_id: str
    runbook: str
    host: str
    params: dict[str, Any]
    requested_by: str
    incident_id: str | None = None


def _job(request: approvals.Request, params: dict[str, Any]) -> Any:
    try:
        from runbooks.engine import ExecutionRequest  # type: ignore[attr-defined]
    except ImportError:
        return _Job(
            request.id,
            request.runbook,
            request.host,
            params,
            request.requested_by,
            request.incident_id,
        )
    return ExecutionRequest(
        request_id=request.id,
        runbook=request.runbook,
        host=request.host,
        params=params,
        requested_by=request.requested_by,
        incident_id=request.incident_id,
    )


def spawn(coro: Any) -> asyncio.Task[Any]:
    """Run ``coro`` after the ack; kept referenced until it finishes."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


async def wait_idle(timeout: float = 30.0) -> None:
    """Wait, at most ``timeout`` seconds in all, for the tasks spawned here on this event loop
    (tests, the shell, shutdown). A task whose loop was closed while it was pending can never
    finish: it is forgotten rather than waited for, which would never end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for task in [t for t in _TASKS if t.get_loop().is_closed()]:
            _TASKS.discard(task)
        pending = [t for t in _TASKS if not t.done() and t.get_loop() is loop]
        left = deadline - loop.time()
        if not pending or left <= 0:
            return
        await asyncio.wait(pending, timeout=left)


def start(services: Services, request_id: str) -> asyncio.Task[Any]:
    return spawn(run(services, request_id))


def _outcome(result: Any) -> tuple[str, str]:
    """Map the engine's ExecutionResult to the request's final state and a one-line summary."""
    value: Any = getattr(result, "state", None)
    value = getattr(value, "value", value)
    if value is None:
        value = "succeeded" if getattr(result, "ok", False) else "failed"
    text = str(value).lower().replace("-", "_")
    state = {
        "succeeded": "succeeded",
        "rolled_back": "rolled_back",
        "dry_run": "approved",
        "interrupted": "interrupted",
    }.get(text, "failed")
    if state == "approved":
        return state, "nothing was changed; the plan is above"
    found = getattr(result, "summary", None) or getattr(result, "error", None) or ""
    return state, " ".join(str(found).split())


async def run(services: Services, request_id: str) -> str:
    """Execute an approved request (the engine only posts the plan in a dry run); return the
    request's final state."""
    request = approvals.get_request(services, request_id)
    if request is None or request.state != "running":
        return request.state if request else "missing"
    thread = request.key
    steps = 0

    async def progress(text: str) -> None:
        nonlocal steps
        steps += 1
        services.outbox.post(f"{thread}:step:{steps}", request.channel, text, thread_key=thread)

    engine = services.engine
    _RUNNING.add(request_id)
    try:
        if engine is None:
            raise RuntimeError("the runbook engine is not installed")
        # The engine re-validates the parameters as typed: the target may have changed.
        job = _job(request, dict(request.raw_params))
        result = await engine.execute(services, job, progress=progress)
        state, summary = _outcome(result)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the engine failed in a way it did not report itself
        log.exception("execution of %s failed", request_id)
        state, summary = "failed", " ".join(f"{type(exc).__name__}: {exc}".split())
        services.metrics.executions.labels(request.runbook, "failed").inc()
        if not services.audit.list(request_id=request_id, action="execution.failed"):
            services.audit.append(
                "system",
                "execution.failed",
                host=request.host,
                runbook=request.runbook,
                request_id=request_id,
                incident_id=request.incident_id,
                detail={"error": summary},
            )
    finally:
        _RUNNING.discard(request_id)
    finish(services, request_id, state, summary)
    return state


_FINAL_WORD = {
    "succeeded": ":white_check_mark: Succeeded",
    "rolled_back": ":leftwards_arrow_with_hook: Rolled back",
    "failed": ":x: Failed",
    "interrupted": ":warning: Interrupted",
    "approved": ":memo: Dry run",
}


def finish(services: Services, request_id: str, state: str, summary: str) -> bool:
    """Record the final state, update the request message, post the outcome in its thread.
    False when the request was no longer running (somebody else finished it)."""
    with services.db.transaction() as tx:
        won = tx.execute(
            "UPDATE requests SET state = ?, finished_at = ?, result = ?"
            " WHERE id = ? AND state = 'running'",
            (state, iso(), summary, request_id),
        ).rowcount
        if not won:
            return False
        request = approvals.update_message(services, tx, request_id)
        what = f"{request.runbook} on {request.host}"
        text = f"{_FINAL_WORD[state]}: {what}"
        rest = summary.removeprefix(what).strip()
        if rest and rest != state:
            text += f" — {rest}"
        services.outbox.post(
            f"{request.key}:final", request.channel, text, thread_key=request.key, conn=tx
        )
    return True


# -- housekeeping ------------------------------------------------------------------------


def reconcile(services: Services) -> int:
    """Requests left ``running`` by a process that is gone get the state their execution
    reached (the engine's recovery marks those ``interrupted``), or ``interrupted`` when no
    execution started within ``STALL_GRACE``. Returns how many were settled."""
    try:
        rows = services.db.query(
            "SELECT r.id, r.decided_at, e.state AS exec_state, e.summary, e.error"
            " FROM requests r LEFT JOIN executions e ON e.request_id = r.id"
            " WHERE r.state = 'running'"
        )
    except sqlite3.OperationalError:  # no engine tables in this database
        rows = [
            {**r, "exec_state": None, "summary": None, "error": None}
            for r in services.db.query(
                "SELECT id, decided_at FROM requests WHERE state = 'running'"
            )
        ]
    settled = 0
    for row in rows:
        if row["id"] in _RUNNING:
            continue
        exec_state = row["exec_state"]
        if exec_state == "running":
            continue  # still running somewhere, or the engine's recovery will say otherwise
        if exec_state is None:
            age = (utcnow() - parse_iso(row["decided_at"])).total_seconds()
            if age < STALL_GRACE:
                continue
            state, summary = "interrupted", "the bot stopped before the runbook started"
        else:
            state, summary = _outcome(_Stored(exec_state, row["summary"] or row["error"] or ""))
        settled += finish(services, row["id"], state, summary)
    return settled


@dataclass(frozen=True)
class _Stored:
    state: str
    summary: str


async def housekeeping(services: Services, *, interval: float = 15.0) -> None:
    """Background job of a serving bot (bot/server.py): expire overdue requests (so their
    message says so even if nobody clicks, also after a restart), settle runs lost by a
    restart, and forget old Slack deliveries. Cancel to stop."""
    last_prune = 0.0
    while True:
        try:
            approvals.expire_due(services)
            reconcile(services)
            if time.monotonic() - last_prune > 3600:
                approvals.prune_deliveries(services)
                last_prune = time.monotonic()
        except sqlite3.Error:
            log.exception("approval housekeeping failed; retrying")
        await asyncio.sleep(interval)
