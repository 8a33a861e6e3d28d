"""aiohttp routes — thin glue. Each route hands the request to the module that owns it.

``/slack/events`` → bot.app (Bolt), ``/alerts/*`` → bot.intake.*, plus ``/healthz`` and
``/metrics``. Background work (the outbox worker, expiry sweeps, crash recovery) is started
in ``on_startup`` hooks registered by those modules through ``BACKGROUND``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from bot.db import AUTOCHECKPOINT_PAGES
from bot.services import Services

log = logging.getLogger(__name__)

SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
TASKS: web.AppKey[list[asyncio.Task]] = web.AppKey("tasks", list)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


async def healthz(request: web.Request) -> web.Response:
    services = services_of(request)
    ok = services.db.ping()
    body = {
        "status": "ok" if ok else "db unavailable",
        "db": str(services.db.path),
        "outbox_pending": services.outbox.pending() if ok else None,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    data, content_type = services_of(request).metrics.render()
    return web.Response(body=data, headers={"Content-Type": content_type})


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request; turn any unexpected exception into a one-line 400, never a 500."""
    started = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    )
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Returned as a plain response: aiohttp deprecates returning the exception object.
        response = web.Response(
            status=exc.status, reason=exc.reason, text=exc.text, headers=exc.headers
        )
    except Exception:
        log.exception("unhandled error on %s", route)
        response = web.json_response(
            {"ok": False, "error": "request could not be processed"}, status=400
        )
    metrics = services_of(request).metrics
    metrics.inc(metrics.requests, route, str(response.status))
    if log.isEnabledFor(logging.DEBUG):
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("%s %s -> %s in %.1fms", request.method, route, response.status, elapsed)
    return response


def build_web_app(services: Services, *, background: bool = True) -> web.Application:
    """The whole HTTP surface of ``stabilize serve``."""
    from bot import app as slack_app
    from bot.intake import agent, alertmanager, sns

    app = web.Application(middlewares=[count_requests], client_max_size=256 * 1024)
    app[SERVICES] = services
    app[TASKS] = []
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/slack/events", slack_app.make_handler(services))
    app.router.add_post("/alerts/sns", sns.handle)
    app.router.add_post("/alerts/alertmanager", alertmanager.handle)
    app.router.add_post("/alerts/agent", agent.handle)
    if background:
        app.on_startup.append(_start_background)
        app.on_cleanup.append(_stop_background)
    return app


async def _start_background(app: web.Application) -> None:
    services = app[SERVICES]
    for start in background_jobs():
        app[TASKS].append(asyncio.create_task(start(services)))


async def _stop_background(app: web.Application) -> None:
    for task in app[TASKS]:
        task.cancel()
    for task in app[TASKS]:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def background_jobs() -> list[Callable[[Services], Coroutine[Any, Any, None]]]:
    """Long-running jobs of a serving bot. Modules add theirs here (one line each)."""

    from bot.incidents import incident_message_sync
    from bot.runs import housekeeping as approvals_housekeeping
    from runbooks.engine import recovery_job as interrupted_runbooks  # once, at start-up

    async def outbox_worker(services: Services) -> None:
        await services.outbox.run()

    return [
        outbox_worker,
        approvals_housekeeping,
        interrupted_runbooks,
        incident_message_sync,
        wal_checkpoints,
    ]


async def wal_checkpoints(services: Services, *, every: float = 0.5) -> None:
    """Background job: checkpoint the WAL in a worker thread, so that a commit on the event
    loop does not stop every request while it copies pages back and syncs the file."""
    services.db.defer_checkpoints()
    try:
        while True:
            await asyncio.sleep(every)
            running = asyncio.ensure_future(asyncio.to_thread(services.db.checkpoint))
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                # Cancelling does not stop the thread: wait for it, so that nobody closes the
                # database under a checkpoint still running (SQLite would crash the process).
                with contextlib.suppress(sqlite3.Error):
                    await running
                raise
            except sqlite3.Error as exc:  # busy or locked: the next round catches up
                log.warning("WAL checkpoint skipped: %s", exc)
    finally:
        services.db.defer_checkpoints(AUTOCHECKPOINT_PAGES)
