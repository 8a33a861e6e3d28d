"""Approval requests: who may approve what, expiry, the two-person rule, and exactly-once.

The button carries only the request id; on every click the request is re-read from SQLite
and the policy from the config. The change that starts a run is one conditional
``UPDATE requests SET state = 'running' WHERE id = ? AND state = 'pending'`` inside
``BEGIN IMMEDIATE``, together with the approval row, the audit rows and the message update:
double clicks, Slack's retries and two approvers at the same moment cannot start it twice,
whatever process they land in.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot import blocks as kit
from bot.blocks import requests as request_blocks
from bot.config import HOST_NAME_RE
from bot.db import iso, utcnow
from bot.deliveries import prune_deliveries, seen_delivery
from bot.errors import InputError, PolicyError, StabilizeError
from bot.policy import Policy, policy_for
from bot.request_store import Request, get_request, list_requests, load_request
from bot.services import Services

log = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "Policy",
    "Request",
    "approve",
    "create_request",
    "expire_due",
    "get_request",
    "list_requests",
    "policy_for",
    "prune_deliveries",
    "reject",
    "render",
    "seen_delivery",
    "update_message",
]

REQUEST_ID_RE = re.compile(r"^R-[0-9a-f]{10}\Z")
RUNBOOK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
OPEN_STATES = frozenset({"pending"})
FINAL_STATES = frozenset(
    {"succeeded", "failed", "rolled_back", "rejected", "expired", "interrupted"}
)


def render(services: Services, request: Request, note: str = "") -> tuple[str, list[kit.Block]]:
    """Text and blocks of the request message as its state says now."""
    policy = policy_for(services.settings, request.runbook)
    counted = [u for u in request.approvals if policy.counts(u, request.requested_by)]
    note = note or busy_note(services, request)
    return request_blocks.request_message(request, policy, approved_by=counted, note=note)


def busy_note(services: Services, request: Request) -> str:
    """While a request is pending, say so if another runbook holds its host right now (the
    engine would refuse to start this one until that one is done)."""
    holder = getattr(services.engine, "lock_holder", None)
    if request.state != "pending" or holder is None:
        return ""
    try:
        lock = holder(services, request.host)
    except Exception:  # a hint only; never fail a message over it
        log.debug("lock_holder failed", exc_info=True)
        return ""
    if not isinstance(lock, dict) or lock.get("request_id") in (None, request.id):
        return ""
    return (
        f"At {utcnow():%H:%M} UTC {request.host} was busy with {lock.get('runbook')}"
        f" {lock.get('request_id')}; this one cannot start until that one has finished."
    )


def update_message(
    services: Services, conn: sqlite3.Connection, request_id: str, note: str = ""
) -> Request:
    """Queue the re-rendered request message in the caller's transaction."""
    request = load_request(conn, request_id)
    assert request is not None
    text, blocks = render(services, request, note)
    services.outbox.update(request.key, text, blocks, conn=conn)
    return request


# -- creating ----------------------------------------------------------------------------


def new_request_id() -> str:
    return "R-" + secrets.token_hex(5)


def check_names(runbook: str, host: str, params: dict[str, str]) -> None:
    """Shape checks before anything reaches the engine (no shell metacharacters pass)."""
    if not RUNBOOK_NAME_RE.match(runbook):
        raise InputError(f"invalid runbook name {runbook!r} (see `/stabilize help`)")
    if not HOST_NAME_RE.match(host):
        raise InputError(f"invalid host name {host!r} (letters, digits, . _ - only)")
    for key in params:
        if not PARAM_KEY_RE.match(key):
            raise InputError(f"invalid parameter name {key!r} (use key=value, e.g. size=4G)")


def create_request(
    services: Services,
    *,
    runbook: str,
    host: str,
    params: dict[str, str],
    requested_by: str,
    reason: str = "",
    evidence: Any = None,
    incident_id: str | int | None = None,
    thread_key: str | None = None,
    channel: str | None = None,
) -> Request:
    """Validate through the engine, check that somebody may approve, store, audit
    ``request.created`` and queue the approval message (key ``request:<id>``).

    Raises InputError (bad runbook/host/parameters) or PolicyError (nobody may approve);
    both are audited as ``input.rejected`` and nothing is stored.
    """
    raw = {str(k): str(v) for k, v in params.items()}
    try:
        check_names(runbook, host, raw)
        engine = services.engine
        if engine is None:
            raise StabilizeError(
                "runbooks cannot run here: the runbook engine is not installed"
                " (runbooks/engine.py); nothing was requested"
            )
        typed = engine.validate(services, runbook, host, raw)
        policy = policy_for(services.settings, runbook)
        eligible = policy.eligible(requested_by)
        if len(eligible) < policy.required:
            listed = ", ".join(f"<@{a}>" for a in eligible) or "nobody"
            raise PolicyError(
                f"nobody can approve {runbook} for you: it needs {policy.required} approver(s)"
                f" other than the requester and only {listed} qualify"
                f" (add approvers under {policy.source}.approvers)"
            )
        plan = engine.format_plan(engine.plan(services, runbook, host, typed))
    except StabilizeError as exc:
        services.audit.append(
            requested_by,
            "input.rejected",
            host=host if HOST_NAME_RE.match(host) else None,
            runbook=runbook if RUNBOOK_NAME_RE.match(runbook) else None,
            incident_id=incident_id,
            detail={"what": "run request", "error": str(exc), "params": raw},
        )
        raise
    now = utcnow()
    request = Request(
        id=new_request_id(),
        runbook=runbook,
        host=host,
        params=json.loads(json.dumps(typed, default=str)),
        raw_params=raw,
        requested_by=requested_by,
        reason=reason or "",
        evidence=evidence,
        plan=plan,
        incident_id=None if incident_id is None else str(incident_id),
        channel=channel or services.settings.slack.channel,
        thread_key=thread_key,
        state="pending",
        created_at=now,
        expires_at=now + timedelta(seconds=policy.expires_after),
    )
    with services.db.transaction() as tx:
        # One pending request per runbook, host and parameters: a double click asks once.
        same = tx.execute(
            "SELECT id FROM requests WHERE state = 'pending' AND runbook = ? AND host = ?"
            " AND raw_params = ? AND expires_at > ?",
            (runbook, host, json.dumps(raw, sort_keys=True), iso(now)),
        ).fetchone()
        if same is None:
            _insert(services, tx, request, policy)
    if same is not None:
        message = f"{runbook} on {host} is already waiting for approval as {same[0]}"
        services.audit.append(
            requested_by,
            "input.rejected",
            host=host,
            runbook=runbook,
            request_id=same[0],
            detail={"what": "run request", "error": message, "params": raw},
        )
        raise InputError(message + " (approve or reject that one)")
    return request


def _insert(services: Services, tx: sqlite3.Connection, request: Request, policy: Policy) -> None:
    """Store the request, audit ``request.created`` and queue its message, all in ``tx``."""
    tx.execute(
        "INSERT INTO requests (id, runbook, host, params, raw_params, requested_by, reason,"
        " evidence, plan, incident_id, channel, thread_key, state, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        (
            request.id,
            request.runbook,
            request.host,
            json.dumps(request.params),
            json.dumps(request.raw_params, sort_keys=True),
            request.requested_by,
            request.reason,
            json.dumps(request.evidence, default=str),
            request.plan,
            request.incident_id,
            request.channel,
            request.thread_key,
            iso(request.created_at),
            iso(request.expires_at),
        ),
    )
    _audit(
        services,
        request,
        request.requested_by,
        "request.created",
        {
            "params": request.raw_params,
            "reason": request.reason,
            "required": policy.required,
            "approvers": list(policy.approvers),
            "expires_at": iso(request.expires_at),
        },
        conn=tx,
    )
    text, blocks = render(services, request)
    services.outbox.post(
        request.key, request.channel, text, blocks, thread_key=request.thread_key, conn=tx
    )


# -- deciding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a click did. ``message`` is the one line for the person who clicked."""

    outcome: str  # started | recorded | already | rejected | denied | expired | closed
    message: str
    request: Request | None = None

    @property
    def started(self) -> bool:
        return self.outcome == "started"

    @property
    def changed_message(self) -> bool:
        """True when the request message was just replaced (buttons gone or count changed)."""
        return self.outcome in {"started", "recorded", "rejected", "expired"}


def _require(services: Services, request_id: str, user: str) -> Request:
    if not REQUEST_ID_RE.match(request_id or ""):
        services.audit.append(
            user, "input.rejected", detail={"what": "button", "request_id": str(request_id)[:40]}
        )
        raise InputError(f"malformed request id {str(request_id)[:40]!r}")
    request = get_request(services, request_id)
    if request is None:
        services.audit.append(
            user, "input.rejected", detail={"what": "button", "request_id": request_id}
        )
        raise InputError(f"there is no request {request_id} (it may belong to another bot)")
    return request


def _audit(
    services: Services,
    request: Request,
    actor: str,
    action: str,
    detail: dict[str, Any] | None = None,
    *,
    conn: sqlite3.Connection | None = None,
) -> None:
    """An audit event about ``request``: its host, runbook, id and incident."""
    services.audit.append(
        actor,
        action,
        host=request.host,
        runbook=request.runbook,
        request_id=request.id,
        incident_id=request.incident_id,
        detail=detail,
        conn=conn,
    )


def _deny(services: Services, request: Request, user: str, why: str, action: str) -> Decision:
    _audit(services, request, user, "request.denied", {"attempted": action, "reason": why})
    return Decision("denied", f"Not allowed: {why}.", request)


def _closed(request: Request, user: str) -> Decision:
    by = f" by <@{request.decided_by}>" if request.decided_by else ""
    if request.state == "running":
        text = f"Already approved{by} and running — nothing to do."
    elif request.state == "pending" and user in request.approvals:
        text = "You already approved this request; it still needs another approver."
    else:
        text = f"This request is already {request.state.replace('_', ' ')}{by}."
    return Decision("already", text, request)


def _pending_in(
    services: Services, tx: sqlite3.Connection, request_id: str, user: str, *, rejecting: bool
) -> Request | Decision:
    """The request, read again inside the decision's transaction if it is still pending;
    else the decision to answer (already decided, or expired just now)."""
    current = load_request(tx, request_id)
    assert current is not None
    if current.state != "pending":
        return _closed(current, user)
    if current.is_expired():
        _expire_in(services, tx, current, "system")
        then = "nothing will run" if rejecting else f"ask again with `{current.command()}`"
        return Decision(
            "expired",
            f"This request expired at {current.expires_at:%H:%M} UTC; {then}.",
            load_request(tx, request_id),
        )
    return current


def _expire_in(services: Services, tx: sqlite3.Connection, request: Request, actor: str) -> bool:
    """Move a pending, overdue request to ``expired``; True if this caller did it."""
    won = tx.execute(
        "UPDATE requests SET state = 'expired', decided_at = ? WHERE id = ? AND state = 'pending'",
        (iso(), request.id),
    ).rowcount
    if not won:
        return False
    detail = {"expires_at": iso(request.expires_at), "approvals": list(request.approvals)}
    _audit(services, request, actor, "request.expired", detail, conn=tx)
    update_message(services, tx, request.id)
    return True


def _elsewhere(
    services: Services, request: Request, user: str, channel: str | None, action: str
) -> Decision | None:
    """A button only works where its message is: a click from another channel is denied."""
    if channel is None or channel == request.channel:
        return None
    why = f"this request belongs to <#{request.channel}>; use the buttons on its message there"
    return _deny(services, request, user, why, action)


def approve(
    services: Services, *, request_id: str, user: str, channel: str | None = None
) -> Decision:
    """Record ``user``'s approval; start the run when it completes the policy.

    Exactly once: the approval insert (UNIQUE per user) and the ``pending → running``
    transition happen in one ``BEGIN IMMEDIATE`` transaction; ``rowcount`` says who won.
    The caller starts the execution only when ``decision.started``.
    """
    request = _require(services, request_id, user)
    elsewhere = _elsewhere(services, request, user, channel, "approve")
    if elsewhere is not None:
        return elsewhere
    policy = policy_for(services.settings, request.runbook)
    if request.state == "pending":
        why = policy.refusal(user, request.requested_by)
        if why:
            return _deny(services, request, user, why, "approve")
    with services.db.transaction() as tx:
        current = _pending_in(services, tx, request_id, user, rejecting=False)
        if isinstance(current, Decision):
            return current
        added = tx.execute(
            "INSERT OR IGNORE INTO approvals (request_id, user, ts) VALUES (?, ?, ?)",
            (request_id, user, iso()),
        ).rowcount
        if not added:
            return _closed(current, user)
        approvals = [
            r[0]
            for r in tx.execute("SELECT user FROM approvals WHERE request_id = ?", (request_id,))
        ]
        counted = [u for u in approvals if policy.counts(u, current.requested_by)]
        complete = len(counted) >= policy.required
        detail = {"approvals": len(counted), "required": policy.required, "complete": complete}
        _audit(services, current, user, "request.approved", detail, conn=tx)
        if not complete:
            updated = update_message(services, tx, request_id)
            left = policy.required - len(counted)
            return Decision(
                "recorded",
                f"Approval recorded ({len(counted)} of {policy.required});"
                f" waiting for {left} more from another approver.",
                updated,
            )
        won = tx.execute(
            "UPDATE requests SET state = 'running', decided_by = ?, decided_at = ?"
            " WHERE id = ? AND state = 'pending'",
            (",".join(counted), iso(), request_id),
        ).rowcount
        if not won:  # cannot happen under BEGIN IMMEDIATE, but the database has the last word
            return _closed(current, user)
        updated = update_message(services, tx, request_id)
    verb = "posting the plan (dry run)" if services.dry_run else "running now"
    return Decision("started", f"Approved — {verb}.", updated)


def reject(
    services: Services, *, request_id: str, user: str, channel: str | None = None
) -> Decision:
    """Approvers (and the requester, to withdraw) may reject a pending request."""
    request = _require(services, request_id, user)
    elsewhere = _elsewhere(services, request, user, channel, "reject")
    if elsewhere is not None:
        return elsewhere
    policy = policy_for(services.settings, request.runbook)
    if request.state == "pending" and user not in policy.approvers and user != request.requested_by:
        who = ", ".join(f"<@{a}>" for a in policy.approvers) or "nobody"
        why = f"only the requester or an approver ({who}) may reject this request"
        return _deny(services, request, user, why, "reject")
    with services.db.transaction() as tx:
        current = _pending_in(services, tx, request_id, user, rejecting=True)
        if isinstance(current, Decision):
            return current
        tx.execute(
            "UPDATE requests SET state = 'rejected', decided_by = ?, decided_at = ?"
            " WHERE id = ? AND state = 'pending'",
            (user, iso(), request_id),
        )
        _audit(services, current, user, "request.rejected", conn=tx)
        updated = update_message(services, tx, request_id)
    return Decision("rejected", "Rejected; nothing will run.", updated)


# -- housekeeping ----------------------------------------------------------------------------


def expire_due(services: Services) -> int:
    """Expire every pending request past its time (audited, message updated)."""
    due = services.db.query(
        "SELECT id FROM requests WHERE state = 'pending' AND expires_at <= ?", (iso(),)
    )
    n = 0
    for row in due:
        with services.db.transaction() as tx:
            request = load_request(tx, row["id"])
            if request is not None and _expire_in(services, tx, request, "system"):
                n += 1
    return n
