"""Approve / Reject buttons over real HTTP: the policy, the two-person rule, expiry, restarts."""

from __future__ import annotations

import asyncio

from slack_fixtures import (
    StandInEngine,
    buttons,
    eventually,
    slack_bot_fixture,  # noqa: F401  (provides `slack_bot`)
    text_of,
)

from bot import approvals


async def test_approver_click_runs_the_runbook_once_and_reports_in_the_thread(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    answer = await bot.click("approve_request", request.id, user="U0ALICE")
    assert answer.status == 200
    await bot.settle()

    [job] = bot.engine.executed
    assert (job.request_id, job.runbook, job.host) == (request.id, "add-swap", "prod-web-01")
    assert job.params == {"size": "2G"} and job.requested_by == "U0CAROL"
    # the click replaced the buttons at once: approved by … — running
    [replaced] = bot.replacements()
    assert "Approved by <@U0ALICE> — running" in text_of(replaced)
    assert buttons(replaced) == []
    # progress in the request's thread, final state on the message itself
    thread = bot.thread(request.id)
    assert thread[:2] == ["step 1/2 on prod-web-01: fallocate", "step 2/2 on prod-web-01: swapon"]
    assert "Succeeded: add-swap on prod-web-01" in thread[-1]
    final = bot.message(request.id)
    assert "Succeeded (approved by <@U0ALICE>)" in text_of(final)
    assert buttons(final) == []
    assert approvals.get_request(bot.services, request.id).state == "succeeded"
    [approved] = bot.audit("request.approved")
    assert approved["actor"] == "U0ALICE" and approved["request_id"] == request.id


async def test_failed_run_is_shown_as_failed(slack_bot):
    bot = await slack_bot(engine=StandInEngine(outcome="rolled_back"))
    request = await bot.ask()
    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()
    assert "Failed and rolled back" in text_of(bot.message(request.id))
    assert approvals.get_request(bot.services, request.id).state == "rolled_back"


async def test_non_approver_is_denied_ephemerally_and_audited(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    await bot.click("approve_request", request.id, user="U0MALLORY")
    await bot.settle()
    [line] = bot.ephemeral_replies()[-1:]
    assert line.startswith("Not allowed: you are not an approver for add-swap")
    assert "<@U0ALICE>, <@U0BOB>" in line
    assert bot.engine.executed == []
    assert bot.replacements() == []
    [denied] = bot.audit("request.denied")
    assert denied["actor"] == "U0MALLORY" and denied["request_id"] == request.id
    assert buttons(bot.message(request.id))  # still waiting for a real approver


async def test_self_approval_is_refused_when_allow_self_is_false(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0ALICE")
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert "may not approve it yourself" in bot.ephemeral_replies()[-1]
    assert "approvals.allow_self is false" in bot.ephemeral_replies()[-1]
    assert bot.engine.executed == []
    [denied] = bot.audit("request.denied")
    assert denied["actor"] == "U0ALICE"
    # another approver can
    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()
    assert len(bot.engine.executed) == 1


async def test_self_approval_allowed_per_runbook(slack_bot):
    bot = await slack_bot(approvals={"runbooks": {"add-swap": {"allow_self": True}}})
    request = await bot.ask(user="U0ALICE")
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert len(bot.engine.executed) == 1


async def test_two_approvals_need_two_different_people(slack_bot):
    bot = await slack_bot(approvals={"required": 2, "approvers": ["U0ALICE", "U0BOB", "U0DAN"]})
    request = await bot.ask(user="U0CAROL")
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.click("approve_request", request.id, user="U0ALICE")  # the same person again
    await bot.settle()
    assert bot.engine.executed == []
    replies = bot.ephemeral_replies()[-2:]
    assert any("Approval recorded (1 of 2)" in r for r in replies)
    assert any("You already approved this request" in r for r in replies)
    waiting = bot.message(request.id)
    assert "1 so far: <@U0ALICE>" in text_of(waiting) and buttons(waiting)

    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()
    assert len(bot.engine.executed) == 1
    assert "Approved by <@U0ALICE>, <@U0BOB> — running" in text_of(bot.replacements()[-1])
    assert len(bot.audit("request.approved")) == 2


async def test_twenty_concurrent_clicks_from_two_approvers_run_once(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    clicks = [
        bot.click("approve_request", request.id, user=("U0ALICE", "U0BOB")[n % 2])
        for n in range(20)
    ]
    answers = await asyncio.gather(*clicks)
    assert {a.status for a in answers} == {200}
    await bot.settle()
    assert len(bot.engine.executed) == 1
    assert len(bot.audit("request.approved")) == 1
    assert len(bot.replacements()) == 1
    late = [r for r in bot.ephemeral_replies() if "Approval request" not in r]
    assert len(late) == 19
    assert all(r.startswith(("Already approved", "This request is already")) for r in late)


async def test_slack_retry_of_a_click_does_not_run_twice(slack_bot):
    bot = await slack_bot()
    request = await bot.ask()
    before = len(bot.api.calls("response_url"))
    body = bot.signer.block_actions("approve_request", request.id, user_id="U0ALICE")
    first = await bot.post(body, bot.signer.headers(body))
    retry_headers = {**bot.signer.headers(body), "X-Slack-Retry-Num": "1"}
    retry = await bot.post(body, retry_headers)
    assert (first.status, retry.status) == (200, 200)
    await bot.settle()
    assert len(bot.engine.executed) == 1
    # the message replaced once, for the first delivery only
    assert len(bot.api.calls("response_url")) - before == 1


async def test_reject_by_an_approver_closes_the_request(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    await bot.click("reject_request", request.id, user="U0MALLORY")
    await bot.settle()
    assert "only the requester or an approver" in bot.ephemeral_replies()[-1]
    await bot.click("reject_request", request.id, user="U0BOB")
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert bot.engine.executed == []
    assert "Rejected by <@U0BOB>" in text_of(bot.message(request.id))
    assert "already rejected" in bot.ephemeral_replies()[-1]
    assert [r["actor"] for r in bot.audit("request.rejected")] == ["U0BOB"]


async def test_click_after_expiry_is_refused_and_the_message_says_so(slack_bot):
    bot = await slack_bot(approvals={"expires_after": "1ms"})
    request = await bot.ask(user="U0CAROL")
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert bot.engine.executed == []
    line = bot.ephemeral_replies()[-1]
    assert "expired" in line and "/stabilize run add-swap prod-web-01 size=2G" in line
    assert "Expired without enough approvals" in text_of(bot.message(request.id))
    assert buttons(bot.message(request.id)) == []
    [expired] = bot.audit("request.expired")
    assert expired["request_id"] == request.id
    assert bot.audit("request.approved") == []


async def test_a_reject_after_expiry_says_when_it_expired_and_that_nothing_runs(slack_bot):
    bot = await slack_bot(approvals={"expires_after": "1ms"})
    request = await bot.ask(user="U0CAROL")
    await bot.click("reject_request", request.id, user="U0BOB")
    await bot.settle()
    line = bot.ephemeral_replies()[-1]
    assert "This request expired at" in line and "nothing will run" in line, line
    assert bot.audit("request.rejected") == []
    assert [e["request_id"] for e in bot.audit("request.expired")] == [request.id]


async def test_expired_requests_are_closed_after_a_restart_without_any_click(slack_bot):
    bot = await slack_bot(approvals={"expires_after": "1ms"})
    request = await bot.ask(user="U0CAROL")
    bot.background = True  # the restarted bot runs its background jobs (expiry sweep)
    await bot.restart()
    await eventually(lambda: "Expired" in text_of(bot.message(request.id)))
    assert len(bot.audit("request.expired")) == 1


async def test_restart_between_request_and_click_still_works(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    await bot.restart()
    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()
    assert [j.request_id for j in bot.engine.executed] == [request.id]
    assert "Succeeded" in text_of(bot.message(request.id))


async def test_a_changed_policy_applies_to_pending_requests(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    bot.config["approvals"] = {"approvers": ["U0BOB"]}  # Alice is no longer an approver
    await bot.restart()
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()
    assert bot.engine.executed == []
    assert "not an approver" in bot.ephemeral_replies()[-1]


async def test_forged_or_unknown_request_ids_change_nothing(slack_bot):
    bot = await slack_bot()
    for value in ("R-0000000000", "'; DROP TABLE requests; --", ""):
        answer = await bot.click("approve_request", value, user="U0ALICE")
        assert answer.status == 200
    await bot.settle()
    lines = bot.ephemeral_replies()
    assert "there is no request R-0000000000" in lines[0]
    assert all("malformed request id" in line for line in lines[1:])
    assert len(bot.audit("input.rejected")) == 3
    assert bot.engine.executed == []


async def test_a_click_from_another_channel_is_denied(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    body = bot.signer.block_actions(
        "approve_request", request.id, user_id="U0ALICE", channel_id="C0OTHER"
    )
    assert (await bot.post(body, bot.signer.headers(body))).status == 200
    await bot.settle()
    assert bot.engine.executed == []
    assert "belongs to <#C0ALERTS>" in bot.ephemeral_replies()[-1]
    [denied] = bot.audit("request.denied")
    assert denied["actor"] == "U0ALICE"
    assert approvals.get_request(bot.services, request.id).state == "pending"


async def test_a_request_for_a_busy_host_says_so(slack_bot):
    bot = await slack_bot()
    bot.engine.locks["prod-web-01"] = {"host": "prod-web-01", "request_id": "R-00000000aa",
                                       "runbook": "resize-instance"}  # fmt: skip
    request = await bot.ask(user="U0CAROL")
    shown = text_of(bot.message(request.id))
    assert "prod-web-01 was busy with resize-instance R-00000000aa" in shown
    assert "cannot start until that one has finished" in shown
