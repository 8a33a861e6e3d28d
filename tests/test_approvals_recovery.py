"""A request whose run was lost with its process: after a restart, the message says what
happened instead of "running" forever."""

from __future__ import annotations

from datetime import timedelta

from slack_fixtures import (
    buttons,
    eventually,
    slack_bot_fixture,  # noqa: F401  (provides `slack_bot`)
    text_of,
)

from bot import approvals, runs
from bot.db import iso, utcnow


def crashed_while_running(bot, request_id: str, *, approved_ago: float = 1.0) -> None:
    """What the database holds when the bot died after approving, before finishing."""
    with bot.services.db.transaction() as tx:
        tx.execute(
            "UPDATE requests SET state = 'running', decided_by = 'U0ALICE', decided_at = ?"
            " WHERE id = ?",
            (iso(utcnow() - timedelta(seconds=approved_ago)), request_id),
        )


async def test_run_marked_interrupted_by_the_engine_shows_on_the_message(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    crashed_while_running(bot, request.id)
    # the engine's start-up recovery found the process gone and marked its execution
    with bot.services.db.transaction() as tx:
        tx.execute(
            "INSERT INTO executions (request_id, runbook, host, params, state, node, pid,"
            " started_at, error) VALUES (?, 'add-swap', 'prod-web-01', '{}', 'interrupted',"
            " 'gone', 1, ?, 'process 1 is gone')",
            (request.id, iso()),
        )
    bot.background = True  # the restarted bot runs its housekeeping
    await bot.restart()
    await eventually(lambda: "Interrupted" in text_of(bot.message(request.id)), timeout=20)
    assert approvals.get_request(bot.services, request.id).state == "interrupted"
    assert buttons(bot.message(request.id)) == []


async def test_approved_but_never_started_is_interrupted_after_the_grace(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    crashed_while_running(bot, request.id, approved_ago=1.0)
    await bot.restart()
    assert runs.reconcile(bot.services) == 0  # too recent: its process may still start it
    crashed_while_running(bot, request.id, approved_ago=runs.STALL_GRACE + 60)
    assert runs.reconcile(bot.services) == 1
    await bot.settle()
    assert "Interrupted" in text_of(bot.message(request.id))
    assert "before the runbook started" in bot.thread(request.id)[-1]
    assert bot.engine.executed == []
