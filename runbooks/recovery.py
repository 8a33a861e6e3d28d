"""Crash safety: executions left ``running`` by a process that died are reported, never
retried. ``recover_interrupted`` runs once when ``stabilize serve`` starts (``recovery_job``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from runbooks import store

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)


def recover_interrupted(services: Services) -> list[str]:
    """At start-up: executions left ``running`` by a process that is gone are marked
    interrupted (audited), their locks freed and their Slack thread told. Never retried."""
    recovered = []
    for row in store.running(services):
        if store.process_alive(row["node"], row["pid"], row["proc_start"]):
            continue
        last = services.db.query_one(
            "SELECT n, name, state FROM execution_steps WHERE execution_id = ?"
            " ORDER BY n DESC LIMIT 1",
            (row["id"],),
        )
        where = f"during step {last['n']} ({last['name']})" if last else "before its first step"
        text = (
            f":warning: {row['runbook']} on {row['host']} was interrupted {where}: the bot"
            " stopped while it ran. It will not be retried; check the host, then ask again"
            " if it is still needed."
        )
        detail = {
            "error": f"process {row['pid']} is gone",
            "at": where,
            "started_at": row["started_at"],
        }
        if not store.mark_interrupted(services, row, detail):
            continue
        recovered.append(row["request_id"])
        services.metrics.executions.labels(row["runbook"], "interrupted").inc()
        key = f"request:{row['request_id']}"
        if _has_message(services, key):
            services.outbox.post(
                f"{key}:interrupted", services.settings.slack.channel, text, thread_key=key
            )
        log.warning("%s", text)
    return recovered


def _has_message(services: Services, key: str) -> bool:
    """Only thread under a request message that exists or is queued (else the outbox waits)."""
    if services.outbox.message(key) is not None:
        return True
    return (
        services.db.query_one(
            "SELECT 1 AS x FROM outbox WHERE key = ? AND op = 'post' AND state != 'failed'", (key,)
        )
        is not None
    )


async def recovery_job(services: Services) -> None:
    """The start-up job for ``bot.server.background_jobs``: recover once, then finish."""
    try:
        await asyncio.to_thread(recover_interrupted, services)
    except Exception:
        log.exception("recovering interrupted executions failed")
