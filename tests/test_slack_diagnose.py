"""`/stabilize <host>` and the recommendation buttons of a diagnosis, over real HTTP."""

from __future__ import annotations

from slack_fixtures import (
    buttons,
    slack_bot_fixture,  # noqa: F401  (provides `slack_bot`)
    text_of,
)

from bot import approvals
from bot.diagnosis import Diagnosis, record
from bot.diagnosis_rules import Recommended
from bot.facts import Facts


async def test_diagnose_a_real_host_over_ssh(slack_bot, sshd, aws_env):
    bot = await slack_bot(hosts={"web-1": sshd.host_config()})
    answer = await bot.command("web-1", user="U0ALICE")
    assert answer.status == 200
    assert "Diagnosing web-1" in answer.json()["text"]
    await bot.settle()
    [posted] = bot.audit("diagnosis.posted")
    assert posted["actor"] == "U0ALICE" and posted["host"] == "web-1"
    assert any("web-1" in text_of(m) for m in bot.api.messages("C0ALERTS"))


async def test_unknown_or_invalid_host_is_one_line_with_the_usage(slack_bot, aws_env):
    bot = await slack_bot()
    reply = (await bot.command("no;such")).json()["text"]
    assert "invalid host" in reply and "Usage:" in reply
    answer = await bot.command("ghost-01")  # not in the inventory, no EC2 instance either
    assert "not in the inventory" in answer.json()["text"]
    await bot.settle()
    line = bot.ephemeral_replies()[-1]
    assert "unknown host 'ghost-01'" in line and "Usage:" in line
    assert bot.api.messages() == []
    assert len(bot.audit("input.rejected")) == 2


def store_diagnosis(bot) -> None:
    diagnosis = Diagnosis(
        host="prod-web-01",
        facts=Facts(host="prod-web-01"),
        recommendations=[
            Recommended(
                "add-swap",
                {"size": "2G"},
                "the OOM killer ran twice and there is no swap",
                ["oom kills: 2 in 24h", "swap: none"],
            )
        ],
    )
    record(bot.services, diagnosis, requested_by="U0ALICE", channel="C0ALERTS")


async def test_recommendation_button_asks_for_approval_in_the_diagnosis_thread(slack_bot):
    bot = await slack_bot()
    store_diagnosis(bot)
    await bot.settle()
    [diagnosis_message] = bot.api.messages("C0ALERTS")
    [recommend] = [b for b in buttons(diagnosis_message) if b["action_id"].startswith("recommend_")]

    await bot.click(recommend["action_id"], recommend["value"], user="U0BOB")
    await bot.settle()
    [request] = approvals.list_requests(bot.services)
    assert (request.runbook, request.host, request.raw_params) == (
        "add-swap",
        "prod-web-01",
        {"size": "2G"},
    )
    assert request.requested_by == "U0BOB"
    message = bot.message(request.id)
    assert message["thread_ts"] == diagnosis_message["ts"]  # in the diagnosis thread
    shown = text_of(message)
    assert "the OOM killer ran twice" in shown and "oom kills: 2 in 24h" in shown

    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert [j.request_id for j in bot.engine.executed] == [request.id]


async def test_stale_recommendation_button_is_refused(slack_bot):
    bot = await slack_bot()
    await bot.click("recommend_1", "999999", user="U0BOB")
    await bot.settle()
    assert "no longer available" in bot.ephemeral_replies()[-1]
    assert approvals.list_requests(bot.services) == []
    [rejected] = bot.audit("input.rejected")
    assert rejected["actor"] == "U0BOB"
