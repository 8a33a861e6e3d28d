"""What every intake route shares: read a bounded body, refuse with one audited line, accept.

A route module only writes ``parse(services, request, body) -> list[Alert]`` and raises
``AuthError`` (bad token or signature), ``InputError`` (bad body) or ``Unavailable`` (we
cannot check right now; the sender should retry). ``handle_with`` turns those into a 401/403,
a 400 or a 503 with a one-line reason and an ``auth.rejected`` / ``input.rejected`` audit
row; nothing else changes. Accepted alerts are committed before the 200.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.errors import AuthError, InputError
from bot.intake.batching import accept_async
from bot.intake.model import Alert
from bot.services import Services

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024

Parser = Callable[[Services, web.Request, bytes], Awaitable[list[Alert]]]


class Unavailable(Exception):
    """We could not verify or store the request right now; a 503 tells the sender to retry."""


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"body is not valid JSON ({exc})") from None
    except RecursionError:  # not a ValueError: it would escape as an unaudited error
        raise InputError("body is JSON nested too deeply") from None


def reject(
    services: Services,
    request: web.Request,
    source: str,
    status: int,
    reason: str,
    *,
    auth: bool,
) -> web.Response:
    """The one-line refusal, audited; nothing else changes."""
    try:
        services.audit.append(
            source,
            "auth.rejected" if auth else "input.rejected",
            detail={"route": request.path, "reason": reason, "remote": request.remote or ""},
        )
    except sqlite3.Error:
        log.exception("could not audit a refused request on %s", request.path)
    outcome = "auth_rejected" if auth else "input_rejected"
    services.metrics.inc(services.metrics.alerts, source, outcome)
    return web.json_response({"ok": False, "error": reason}, status=status)


async def handle_with(
    request: web.Request, source: str, parse: Parser, *, auth_status: int = 401
) -> web.Response:
    from bot.server import services_of

    services = services_of(request)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return reject(
            services,
            request,
            source,
            400,
            f"body is larger than {MAX_BODY // 1024} KiB; send fewer alerts per request",
            auth=False,
        )
    if len(body) > MAX_BODY:
        return reject(
            services,
            request,
            source,
            400,
            f"body is larger than {MAX_BODY // 1024} KiB",
            auth=False,
        )
    try:
        alerts = await parse(services, request, body)
    except AuthError as exc:
        return reject(services, request, source, auth_status, str(exc), auth=True)
    except InputError as exc:
        return reject(services, request, source, 400, str(exc), auth=False)
    except Unavailable as exc:
        log.warning("%s: %s", request.path, exc)
        return web.json_response({"ok": False, "error": str(exc)}, status=503)
    if not alerts:
        return web.json_response({"ok": True, "alerts": 0, "incidents": []})
    try:
        outcomes = await accept_async(services, alerts)
    except sqlite3.Error as exc:
        # Nothing was committed (the transaction rolled back): the sender must retry.
        log.error("could not store %d alert(s) from %s: %s", len(alerts), source, exc)
        return web.json_response(
            {"ok": False, "error": "the alert database is unavailable; retry later"}, status=503
        )
    return web.json_response(
        {"ok": True, "alerts": len(outcomes), "incidents": [o.to_dict() for o in outcomes]}
    )
