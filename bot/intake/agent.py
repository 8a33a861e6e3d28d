"""``POST /alerts/agent``: alerts from ``stabilize agent`` (or any script that signs alike).

Wire format (JSON): ``{"host", "kind", "severity", "summary", "details"?, "resolved"?}`` with
``X-Stabilize-Timestamp: <unix seconds>`` and ``X-Stabilize-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``v1:<timestamp>:<body>`` keyed by ``STABILIZE_WEBHOOK_TOKEN``. Timestamps more
than five minutes away from the bot's clock are refused. The incident key is (host, kind).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from bot.config import HOST_NAME_RE
from bot.errors import AuthError, InputError
from bot.intake.common import handle_with, parse_json
from bot.intake.model import SEVERITIES, Alert, clip
from bot.services import Services

SOURCE = "agent"
WINDOW = 300  # seconds either side of now
MEMORY = 100_000  # request ids kept in memory for the replay check
KINDS = (
    "oom_kill",
    "memory_pressure",
    "swap_exhausted",
    "cpu_high",
    "disk_full",
    "service_down",
    "custom",
)


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
    A replay carries both unchanged (the signature covers the timestamp). Led by the time, new
    ids land at the end of the alerts index instead of at random pages all over it."""
    timestamp = request.headers.get("X-Stabilize-Timestamp", "").strip()
    return f"{timestamp}:{request.headers.get('X-Stabilize-Signature', '').strip()}"


def _seen(services: Services) -> OrderedDict[str, float]:
    """Request ids accepted (or being accepted) lately, oldest first, per running bot."""
    seen: OrderedDict[str, float] | None = getattr(services, "_agent_signatures", None)
    if seen is None:
        seen = OrderedDict()
        setattr(services, "_agent_signatures", seen)  # noqa: B010 - not a Services field
    return seen


def _forget(request: web.Request, key: str) -> None:
    from bot.server import services_of

    _seen(services_of(request)).pop(key, None)


def check_replay(services: Services, key: str, now: float | None = None) -> None:
    """A signed request is good once: the same ``request_id`` again within the window is a
    replay. Checked in memory (also catches two copies in flight) and in the alerts table
    (survives a restart)."""
    now = time.time() if now is None else now
    seen = _seen(services)
    # Drop expired ids, oldest first, and the oldest beyond MEMORY: the memory is for copies
    # in flight; one committed is found in the database. Each step is O(1).
    while seen:
        oldest, expires = next(iter(seen.items()))
        if expires >= now and len(seen) < MEMORY:
            break
        del seen[oldest]
    stored = services.db.conn.execute(
        "SELECT 1 FROM alerts WHERE external_id = ? LIMIT 1", (key,)
    ).fetchone()
    if key in seen or stored:
        raise AuthError("replayed request: this signature was already used (sign each request)")
    seen[key] = now + 2 * WINDOW


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
