"""``POST /alerts/agent``: alerts from ``stabilize agent`` (or any script that signs alike).

Wire format (JSON): ``{"host", "kind", "severity", "summary", "details"?, "resolved"?}`` with
``X-Stabilize-Timestamp: <unix seconds>`` and ``X-Stabilize-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``v1:<timestamp>:<body>`` keyed by ``STABILIZE_WEBHOOK_TOKEN``. Timestamps more
than five minutes away from the bot's clock are refused. The incident key is (host, kind).
"""

from __future__ import annotations

import hmac
import sqlite3
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.agent.options import KINDS  # the agent and the bot accept the same kinds
from bot.config import HOST_NAME_RE
from bot.db import iso
from bot.errors import AuthError, InputError
from bot.intake.common import handle_with, parse_json
from bot.intake.model import SEVERITIES, Alert, clip
from bot.services import Services

SOURCE = "agent"
WINDOW = 300  # seconds either side of now
MEMORY = 500_000  # request ids the replay guard keeps (about 100 MB at most)


async def handle(request: web.Request) -> web.Response:
    key = request_id(request)
    try:
        response = await handle_with(request, SOURCE, parse)
    except BaseException:
        _forget(request, key)
        raise
    if response.status >= 500:  # not stored: the sender may send the same request again
        _forget(request, key)
    return response


def request_id(request: web.Request) -> str:
    """A signed request's id, stored as the alert's ``external_id``: ``<timestamp>:<signature>``.
    A replay carries both unchanged (the signature covers the timestamp)."""
    timestamp = request.headers.get("X-Stabilize-Timestamp", "").strip()
    return f"{timestamp}:{request.headers.get('X-Stabilize-Signature', '').strip()}"


class ReplayGuard:
    """The ids of the agent requests accepted while their timestamps are inside the window:
    exactly the ids a replay could still carry. A signed request is good once.

    The ids live in memory, checked and added in O(1) (which also catches two copies in
    flight), and are dropped once their timestamp leaves the window. On first use the guard
    reloads the ids of the agent alerts stored in the last two windows, reading the newest
    rows of the alerts table only, so a restart forgets nothing. Why not an index: random
    ids put every insert on its own index page, a third of what a storm writes (measured).
    It keys on the signature part: it covers the timestamp, and agent alerts stored before
    ids carried the timestamp (a bare signature) are then recognised too.
    One ``stabilize serve`` per database: ids accepted by another process are not seen.
    Beyond ``limit`` ids (a storm of thousands of alerts a second for minutes) the oldest
    are forgotten early; a replay of one of those would count once more as a repeat.
    """

    def __init__(self, limit: int = MEMORY) -> None:
        self.limit = limit
        # signature -> when it expires, oldest first
        self.ids: OrderedDict[str, float] = OrderedDict()

    def load(self, conn: sqlite3.Connection, now: float) -> None:
        """Remember the agent requests stored in the last two windows (newest rows first)."""
        cutoff = iso(datetime.fromtimestamp(now - 2 * WINDOW, UTC))
        found: list[tuple[str, float]] = []
        rows = conn.execute("SELECT external_id, received_at, source FROM alerts ORDER BY id DESC")
        try:
            for external_id, received_at, source in rows:
                if received_at < cutoff:
                    break
                if source == SOURCE and external_id:
                    found.append((_signature_of(external_id), _expiry(external_id, now)))
        finally:
            rows.close()  # a statement left open would hold its read snapshot
        for key, expires in reversed(found[: self.limit]):
            self.ids[key] = expires

    def check(self, key: str, now: float) -> None:
        """Refuse ``key`` if it was seen; else remember it. Raises ``AuthError``."""
        ids = self.ids
        while ids:  # expired ids, oldest first, and the oldest beyond the limit; O(1) each
            oldest, expires = next(iter(ids.items()))
            if expires >= now and len(ids) < self.limit:
                break
            del ids[oldest]
        seen = _signature_of(key)
        if seen in ids:
            raise AuthError("replayed request: this signature was already used (sign each request)")
        ids[seen] = _expiry(key, now)

    def forget(self, key: str) -> None:
        """``key`` was not stored (the sender may send the same request again)."""
        self.ids.pop(_signature_of(key), None)


def _signature_of(key: str) -> str:
    """The signature in ``<timestamp>:<signature>``; an older stored id is the bare one."""
    return key.partition(":")[2] or key


def _expiry(key: str, now: float) -> float:
    """When a replay of ``key`` would be refused by the clock check anyway."""
    try:
        return int(key.split(":", 1)[0]) + WINDOW + 1
    except ValueError:  # not ours: keep it as long as any id could matter
        return now + 2 * WINDOW


def replay_guard(services: Services) -> ReplayGuard:
    """The running bot's guard, loaded from the database when first asked for."""
    guard: ReplayGuard | None = getattr(services, "_agent_replay_guard", None)
    if guard is None:
        guard = ReplayGuard()
        guard.load(services.db.conn, time.time())
        setattr(services, "_agent_replay_guard", guard)  # noqa: B010 - not a Services field
    return guard


def _forget(request: web.Request, key: str) -> None:
    from bot.server import services_of

    replay_guard(services_of(request)).forget(key)


def check_replay(services: Services, key: str, now: float | None = None) -> None:
    """A signed request is good once: the same ``request_id`` inside the window is refused."""
    replay_guard(services).check(key, time.time() if now is None else now)


def signature(key: str, timestamp: str, body: bytes) -> str:
    base = b"v1:" + timestamp.encode() + b":" + body
    return "sha256=" + hmac.digest(key.encode(), base, "sha256").hex()


def check_signature(
    services: Services,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    now: float | None = None,
) -> None:
    key = services.secrets.webhook_token
    if not key:
        raise AuthError("the bot has no STABILIZE_WEBHOOK_TOKEN set; set the agent's key there")
    if not timestamp or not sig:
        raise AuthError("missing X-Stabilize-Timestamp or X-Stabilize-Signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise AuthError("X-Stabilize-Timestamp must be unix seconds") from None
    skew = (time.time() if now is None else now) - ts
    if abs(skew) > WINDOW:
        raise AuthError(
            f"X-Stabilize-Timestamp is {abs(int(skew))}s off the bot's clock (limit {WINDOW}s);"
            " check the agent host's clock"
        )
    expected = signature(key, timestamp, body)
    if not hmac.compare_digest(sig.strip().encode(), expected.encode()):
        raise AuthError("bad X-Stabilize-Signature (is the agent's key STABILIZE_WEBHOOK_TOKEN?)")


async def parse(services: Services, request: web.Request, body: bytes) -> list[Alert]:
    check_signature(
        services,
        request.headers.get("X-Stabilize-Timestamp"),
        request.headers.get("X-Stabilize-Signature"),
        body,
    )
    key = request_id(request)
    alert = parse_payload(parse_json(body), external_id=key)
    check_replay(services, key)
    return [alert]


def parse_payload(payload: Any, *, external_id: str | None = None) -> Alert:
    if not isinstance(payload, dict):
        raise InputError('expected a JSON object {"host", "kind", "severity", "summary"}')
    host = payload.get("host")
    if not isinstance(host, str) or not HOST_NAME_RE.match(host):
        raise InputError(f"'host' must be a host name (letters, digits, . _ -), got {host!r}")
    kind = payload.get("kind")
    if kind not in KINDS:
        raise InputError(f"'kind' must be one of {', '.join(KINDS)}; got {kind!r}")
    severity = payload.get("severity")
    if severity not in SEVERITIES:
        raise InputError(f"'severity' must be one of {', '.join(SEVERITIES)}; got {severity!r}")
    summary = payload.get("summary", "")
    if not isinstance(summary, str):
        raise InputError("'summary' must be a string")
    details = payload.get("details", {})
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise InputError("'details' must be an object")
    resolved = payload.get("resolved", False)
    if not isinstance(resolved, bool):
        raise InputError("'resolved' must be true or false")
    return Alert(
        source=SOURCE,
        host=host,
        name=kind,
        status="resolved" if resolved else "firing",
        severity=severity,
        summary=clip(summary or f"{kind} on {host}"),
        details=details,
        external_id=external_id,
    )
