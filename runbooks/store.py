"""Executions, their steps and the host locks in SQLite.

The lock and the execution row are taken in one ``BEGIN IMMEDIATE`` transaction together
with the ``execution.started`` audit row, so two processes can never both run on one host,
and a request runs at most once (``executions.request_id`` is UNIQUE).
"""

from __future__ import annotations

import json
import os
import socket
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.db import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from bot.services import Services
    from runbooks.model import ExecutionRequest


class Busy(Exception):  # noqa: N818 - carries the one-line refusal
    pass


@cache
def node_id() -> str:
    """This machine and boot: a pid means nothing on another host or after a reboot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


def proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(node: str, pid: int, started: str | None) -> bool:
    if node != node_id():
        return False  # another container or a previous boot: that process is gone
    return proc_start(pid) == started if started else os.path.exists(f"/proc/{pid}")


def _holder_text(services: Services, job: ExecutionRequest) -> str:
    rows = services.db.query(
        "SELECT DISTINCT actor FROM audit_events WHERE request_id = ? AND action ="
        " 'request.approved' ORDER BY id",
        (job.request_id,),
    )
    if rows:
        return "approved by " + ", ".join(r["actor"] for r in rows)
    return f"requested by {job.requested_by}"


def describe_lock(lock: dict[str, Any]) -> str:
    since = parse_iso(lock["since"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"{lock['host']} is busy: {lock['runbook']} {lock['request_id']} {lock['holder']}"
        f" since {since}"
    )


def begin(services: Services, job: ExecutionRequest, params: dict[str, Any], state: str) -> int:
    """Record the execution, take the host lock (unless a dry run) and audit
    ``execution.started``, all or nothing. Raises Busy with the line to show."""
    holder = _holder_text(services, job)
    pid = os.getpid()
    with services.db.transaction() as tx:
        done = tx.execute(
            "SELECT state, started_at FROM executions WHERE request_id = ?", (job.request_id,)
        ).fetchone()
        if done is not None:
            raise Busy(
                f"request {job.request_id} has already run ({done['state']}, started"
                f" {done['started_at']}): ask for a new request to run it again"
            )
        lock = tx.execute("SELECT * FROM host_locks WHERE host = ?", (job.host,)).fetchone()
        if lock is not None and state == "running":
            raise Busy(describe_lock(dict(lock)))
        now = iso()
        execution_id = tx.execute(
            "INSERT INTO executions (request_id, runbook, host, params, requested_by,"
            " incident_id, state, node, pid, proc_start, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.request_id,
                job.runbook,
                job.host,
                json.dumps(params, sort_keys=True),
                job.requested_by,
                None if job.incident_id is None else str(job.incident_id),
                state,
                node_id(),
                pid,
                proc_start(pid),
                now,
            ),
        ).lastrowid
        assert execution_id is not None
        if state == "running":
            tx.execute(
                "INSERT INTO host_locks (host, request_id, runbook, holder, since, execution_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job.host, job.request_id, job.runbook, holder, now, execution_id),
            )
        services.audit.append(
            "system",
            "execution.started",
            host=job.host,
            runbook=job.runbook,
            request_id=job.request_id,
            incident_id=job.incident_id,
            detail={
                "params": params,
                "requested_by": job.requested_by,
                "holder": holder,
                "dry_run": state == "dry_run",
            },
            conn=tx,
        )
        return int(execution_id)


def step_started(services: Services, execution_id: int, n: int, name: str) -> None:
    with services.db.transaction() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO execution_steps (execution_id, n, name, state, started_at)"
            " VALUES (?, ?, ?, 'running', ?)",
            (execution_id, n, name, iso()),
        )


def step_finished(
    services: Services,
    execution_id: int,
    job: ExecutionRequest,
    n: int,
    name: str,
    ok: bool,
    duration: float,
    output: str,
) -> None:
    with services.db.transaction() as tx:
        tx.execute(
            "UPDATE execution_steps SET state = ?, finished_at = ?, duration = ?, output = ?"
            " WHERE execution_id = ? AND n = ?",
            ("ok" if ok else "failed", iso(), round(duration, 3), output, execution_id, n),
        )
        services.audit.append(
            "system",
            "execution.step",
            host=job.host,
            runbook=job.runbook,
            request_id=job.request_id,
            incident_id=job.incident_id,
            detail={
                "n": n,
                "step": name,
                "ok": ok,
                "duration": round(duration, 3),
                "output": output[:500],
            },
            conn=tx,
        )


def finish(
    services: Services,
    execution_id: int,
    job: ExecutionRequest,
    state: str,
    action: str,
    detail: dict[str, Any],
) -> None:
    """Close the execution, release the lock and audit the outcome, together."""
    with services.db.transaction() as tx:
        tx.execute(
            "UPDATE executions SET state = ?, finished_at = ?, failed_step = ?, error = ?,"
            " summary = ? WHERE id = ?",
            (
                state,
                iso(),
                detail.get("failed_step"),
                detail.get("error"),
                detail.get("summary"),
                execution_id,
            ),
        )
        tx.execute("DELETE FROM host_locks WHERE execution_id = ?", (execution_id,))
        services.audit.append(
            "system",
            action,
            host=job.host,
            runbook=job.runbook,
            request_id=job.request_id,
            incident_id=job.incident_id,
            detail=detail,
            conn=tx,
        )


def lock_holder(services: Services, host: str) -> dict[str, Any] | None:
    return services.db.query_one("SELECT * FROM host_locks WHERE host = ?", (host,))


def running(services: Services) -> list[dict[str, Any]]:
    return services.db.query("SELECT * FROM executions WHERE state = 'running' ORDER BY id")


def mark_interrupted(services: Services, row: dict[str, Any], detail: dict[str, Any]) -> bool:
    """Mark one execution interrupted and free its lock; False if somebody else did first."""
    with services.db.transaction() as tx:
        changed = tx.execute(
            "UPDATE executions SET state = 'interrupted', finished_at = ?, error = ?"
            " WHERE id = ? AND state = 'running'",
            (iso(), detail.get("error"), row["id"]),
        ).rowcount
        if not changed:
            return False
        tx.execute("DELETE FROM host_locks WHERE execution_id = ?", (row["id"],))
        services.audit.append(
            "system",
            "execution.interrupted",
            host=row["host"],
            runbook=row["runbook"],
            request_id=row["request_id"],
            incident_id=row["incident_id"],
            detail=detail,
            conn=tx,
        )
        return True


def age(since: str) -> float:
    return (utcnow() - parse_iso(since)).total_seconds()
