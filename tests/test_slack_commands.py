"""`/stabilize` over real HTTP with Slack-signed requests: help, run, audit, and bad input."""

from __future__ import annotations

from slack_fixtures import (
    buttons,
    slack_bot_fixture,  # noqa: F401  (provides `slack_bot`)
    text_of,
)

from bot import approvals


async def test_help_is_acked_with_the_usage(slack_bot):
    bot = await slack_bot()
    answer = await bot.command("help")
    assert answer.status == 200
    reply = answer.json()
    assert reply["response_type"] == "ephemeral"
    assert "/stabilize run <runbook> <host>" in reply["text"]
    assert "/stabilize audit" in reply["text"]
    # an empty command is help too
    assert "/stabilize run" in (await bot.command("")).json()["text"]
    assert bot.api.messages() == []


async def test_run_posts_an_approval_request_with_plan_and_buttons(slack_bot):
    bot = await slack_bot(approvals={"expires_after": "30m", "required": 1})
    answer = await bot.command("run add-swap prod-web-01 size=2G", user="U0CAROL")
    assert answer.status == 200
    assert "Preparing an approval request for add-swap on prod-web-01" in answer.json()["text"]
    await bot.settle()

    [request] = approvals.list_requests(bot.services)
    message = bot.message(request.id)
    shown = text_of(message)
    assert "Approval needed: add-swap on prod-web-01" in shown
    assert "<@U0CAROL>" in shown  # who asked
    assert "fallocate -l 2G /swapfile" in shown  # the plan: exactly what will run
    assert "Needs 1 approval from <@U0ALICE>, <@U0BOB>" in shown
    assert "expires" in shown
    approve, reject = buttons(message)
    assert approve["action_id"].startswith("approve") and approve["value"] == request.id
    assert reject["action_id"].startswith("reject") and reject["value"] == request.id
    # the requester hears where it went, ephemerally
    [told] = bot.ephemeral_replies()
    assert request.id in told and "<#C0ALERTS>" in told
    [created] = bot.audit("request.created")
    assert created["actor"] == "U0CAROL" and created["request_id"] == request.id


async def test_run_with_bad_parameters_is_one_line_and_stores_nothing(slack_bot):
    bot = await slack_bot()
    answer = await bot.command("run add-swap prod-web-01 size=1000G", user="U0CAROL")
    assert answer.status == 200
    await bot.settle()
    [line] = bot.ephemeral_replies()
    assert "size must be 1G–64G" in line and "\n" not in line
    assert approvals.list_requests(bot.services) == []
    assert bot.api.calls("chat.postMessage") == []
    [rejected] = bot.audit("input.rejected")
    assert rejected["actor"] == "U0CAROL"


async def test_shell_metacharacters_never_get_past_the_ack(slack_bot):
    bot = await slack_bot()
    for text in ("run add-swap 'prod;rm -rf /'", "run add-swap prod-web-01 size=2G;reboot=1"):
        answer = await bot.command(text)
        assert answer.status == 200
    reply = (await bot.command("run add-swap $(reboot) size=2G")).json()["text"]
    assert "invalid host name" in reply and "Usage" in reply
    await bot.settle()
    assert bot.engine.validated == []
    assert approvals.list_requests(bot.services) == []
    assert len(bot.audit("input.rejected")) == 3


async def test_unknown_sub_command_and_runbook_get_the_usage(slack_bot):
    bot = await slack_bot()
    reply = (await bot.command("frobnicate prod-web-01")).json()["text"]
    assert reply.startswith("Unknown sub-command `frobnicate`") and "Usage:" in reply
    reply = (await bot.command("run no-such-runbook prod-web-01")).json()["text"]
    assert "unknown runbook 'no-such-runbook'" in reply and "Usage" in reply
    reply = (await bot.command("run add-swap")).json()["text"]
    assert "Which runbook on which host?" in reply
    await bot.settle()
    assert bot.api.messages() == []
    assert len(bot.audit("input.rejected")) == 3


async def test_duplicate_run_while_pending_asks_only_once(slack_bot):
    bot = await slack_bot()
    first = await bot.ask()
    await bot.command("run add-swap prod-web-01 size=2G", user="U0CAROL")
    await bot.settle()
    assert [r.id for r in approvals.list_requests(bot.services)] == [first.id]
    assert f"already waiting for approval as {first.id}" in bot.ephemeral_replies()[-1]


async def test_nobody_allowed_to_approve_is_refused_at_creation(slack_bot):
    bot = await slack_bot(
        approvals={"runbooks": {"add-swap": {"approvers": ["U0CAROL"], "allow_self": False}}}
    )
    await bot.command("run add-swap prod-web-01", user="U0CAROL")
    await bot.settle()
    line = bot.ephemeral_replies()[-1]
    assert "nobody can approve add-swap" in line
    assert "approvals.runbooks.add-swap.approvers" in line
    assert approvals.list_requests(bot.services) == []


async def test_audit_summary_is_ephemeral_with_the_timeline_hint(slack_bot):
    bot = await slack_bot()
    await bot.ask()
    await bot.command("run add-swap prod-db-01 size=999G", user="U0CAROL")
    await bot.settle()
    reply = (await bot.command("audit prod-web-01 24h")).json()
    assert reply["response_type"] == "ephemeral"
    shown = text_of(reply)
    assert "Audit log prod-web-01 — last 24h" in shown
    assert "request.created 1" in shown
    assert "prod-db-01" not in shown
    assert "stabilize audit timeline <incident-id>" in shown
    everything = text_of((await bot.command("audit 7d")).json())
    assert "input.rejected" in everything and "request.created" in everything
    bad = (await bot.command("audit prod;x")).json()["text"]
    assert "Not a host or a duration" in bad


async def test_no_engine_means_a_clear_refusal(slack_bot):
    bot = await slack_bot()
    bot.services.engine = None
    reply = (await bot.command("run add-swap prod-web-01")).json()["text"]
    assert "runbook engine is not installed" in reply
    await bot.settle()
    assert approvals.list_requests(bot.services) == []


async def test_acks_are_counted_in_metrics(slack_bot):
    bot = await slack_bot()
    await bot.command("help")
    await bot.click("approve_request", "R-0000000000", user="U0ALICE")
    await bot.settle()
    metrics = await (await bot.client.get("/metrics")).text()
    assert 'stabilize_slack_ack_seconds_count{kind="command"} 1.0' in metrics
    assert 'stabilize_slack_ack_seconds_count{kind="action"} 1.0' in metrics
