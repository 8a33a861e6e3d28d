"""Approval attacks over real, signed HTTP, and races: whatever is clicked, by whom, how often
and from how many processes, a request runs at most once, and only when the config says the
clickers may approve it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from runbook_fixtures import FAST, register_blocking_runbook
from slack_fixtures import (  # noqa: F401
    StandInEngine,
    slack_bot_fixture,  # provides `slack_bot`
)

from bot import approvals
from bot.config import Secrets
from bot.services import build_services
from runbooks.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5  # each race is run this many times, on a fresh request each time
RACES: dict[str, int] = {}


def raced(name: str) -> None:
    RACES[name] = RACES.get(name, 0) + 1


def executions(bot) -> int:
    return len(bot.engine.executed)


async def click_from(bot, action_id: str, value: str, *, user: str, channel: str = "C0ALERTS"):
    body = bot.signer.block_actions(action_id, value, user_id=user, channel_id=channel)
    return await bot.post(body, bot.signer.headers(body))


# -- attacks --------------------------------------------------------------------------------------


async def test_a_click_only_ever_acts_on_the_request_it_names_and_only_once(slack_bot):
    bot = await slack_bot()
    one = await bot.ask(user="U0CAROL")
    other = await bot.ask("run add-swap prod-db-01 size=2G", user="U0CAROL")
    # Another request's id on this request's message: it is the id that counts, and it is
    # checked like any other click (the approver may approve it: config says so).
    await bot.click("approve_request", other.id, user="U0BOB")
    await bot.settle()
    assert [j.request_id for j in bot.engine.executed] == [other.id]
    assert approvals.get_request(bot.services, one.id).state == "pending"
    # After execution, after rejection, after expiry: nothing runs again.
    await bot.click("approve_request", other.id, user="U0ALICE")
    await bot.click("reject_request", one.id, user="U0ALICE")
    await bot.click("approve_request", one.id, user="U0BOB")
    await bot.settle()
    assert executions(bot) == 1
    replies = bot.ephemeral_replies()
    assert any("already" in r and "succeeded" in r for r in replies), replies
    assert any("already" in r and "rejected" in r for r in replies), replies


async def test_a_click_arriving_from_another_channel_changes_nothing(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    answer = await click_from(bot, "approve_request", request.id, user="U0ALICE", channel="C0OTHER")
    assert answer.status == 200
    await bot.settle()
    assert executions(bot) == 0
    assert bot.audit("request.approved") == []
    assert approvals.get_request(bot.services, request.id).state == "pending"


async def test_only_the_config_names_approvers_whatever_the_body_says(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    payload = bot.signer.block_actions_payload("approve_request", request.id, user_id="U0MALLORY")
    # Everything else in the body that looks like authority is ignored: only user.id counts.
    payload["user"].update(username="U0ALICE", name="U0ALICE")
    payload["approvers"] = ["U0MALLORY"]
    payload["state"] = {"values": {"policy": {"approvers": {"value": "U0MALLORY"}}}}
    payload["actions"][0]["value"] = request.id
    body = bot.signer.payload_body(payload)
    assert (await bot.post(body, bot.signer.headers(body))).status == 200
    # The value cannot carry a policy either.
    await bot.click("approve_request", f"{request.id} approvers=U0MALLORY", user="U0MALLORY")
    # The requester cannot approve their own request (allow_self is false by default).
    await bot.click("approve_request", request.id, user="U0CAROL")
    await bot.settle()
    assert executions(bot) == 0
    denied = bot.audit("request.denied")
    assert [d["actor"] for d in denied] == ["U0MALLORY", "U0CAROL"]
    assert approvals.get_request(bot.services, request.id).state == "pending"
    # A signed body claiming an approver's id is Slack's word: that one is allowed.
    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()
    assert executions(bot) == 1


async def test_expiry_wins_over_a_late_click_and_a_late_reject(slack_bot):
    bot = await slack_bot(approvals={"expires_after": "1ms"})
    request = await bot.ask(user="U0CAROL")
    await asyncio.gather(
        bot.click("approve_request", request.id, user="U0ALICE"),
        bot.click("reject_request", request.id, user="U0BOB"),
    )
    await bot.settle()
    assert executions(bot) == 0
    assert approvals.get_request(bot.services, request.id).state == "expired"
    assert len(bot.audit("request.expired")) == 1


# -- races ----------------------------------------------------------------------------------------


async def test_concurrent_clicks_over_http_run_each_request_once(slack_bot):
    bot = await slack_bot()
    for round_ in range(ROUNDS):
        request = await bot.ask(f"run add-swap prod-web-01 size={round_ + 2}G", user="U0CAROL")
        clicks = [
            bot.click("approve_request", request.id, user=("U0ALICE", "U0BOB")[n % 2])
            for n in range(24)
        ]
        answers = await asyncio.gather(*clicks)
        assert {a.status for a in answers} == {200}
        await bot.settle()
        raced("24 approve clicks over HTTP")
        assert [j.request_id for j in bot.engine.executed].count(request.id) == 1


async def test_approve_and_reject_racing_never_both_win(slack_bot):
    bot = await slack_bot()
    for round_ in range(ROUNDS):
        request = await bot.ask(f"run add-swap prod-web-01 size={round_ + 2}G", user="U0CAROL")
        clicks = [
            bot.click(("approve_request", "reject_request")[n % 2], request.id, user="U0ALICE")
            for n in range(10)
        ]
        await asyncio.gather(*clicks)
        await bot.settle()
        raced("approve vs reject")
        state = approvals.get_request(bot.services, request.id).state
        ran = [j.request_id for j in bot.engine.executed].count(request.id)
        assert (state, ran) in {("succeeded", 1), ("rejected", 0)}, (state, ran)


def test_threads_with_their_own_connections_start_a_request_once(settings_factory, tmp_path):
    """Real concurrency at SQLite: 4 Services (4 connections) × 4 threads approving at once."""
    settings = settings_factory(
        hosts={"prod-web-01": {"ssh": {"host": "127.0.0.1", "port": 22, "user": "u"}}}
    )
    db = tmp_path / "race.db"
    pool = [build_services(settings, Secrets(), db, slack=False) for _ in range(4)]
    for svc in pool:
        svc.engine = StandInEngine()
    try:
        for round_ in range(ROUNDS):
            request = approvals.create_request(
                pool[0],
                runbook="add-swap",
                host="prod-web-01",
                params={"size": f"{round_ + 2}G"},
                requested_by="U0CAROL",
            )
            barrier = threading.Barrier(16)
            outcomes: list[str] = []

            def click(
                svc, user: str, request_id: str = request.id, gate=barrier, out=outcomes
            ) -> None:
                gate.wait()
                out.append(approvals.approve(svc, request_id=request_id, user=user).outcome)

            threads = [
                threading.Thread(target=click, args=(pool[n % 4], ("U0ALICE", "U0BOB")[n % 2]))
                for n in range(16)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            raced("16 threads on 4 connections")
            assert outcomes.count("started") == 1, outcomes
            assert len(pool[0].audit.list(request_id=request.id, action="request.approved")) == 1
        assert pool[0].audit.verify().ok
    finally:
        for svc in pool:
            svc.close()


_APPROVER = """
import sys, time
sys.path.insert(0, {tests!r})
from bot import approvals
from bot.config import Secrets, parse_settings
from bot.services import build_services
svc = build_services(parse_settings({settings!r}), Secrets(), {db!r}, slack=False)
while time.time() < {start!r}:
    time.sleep(0.001)
print(approvals.approve(svc, request_id={request_id!r}, user={user!r}).outcome)
"""


def test_two_processes_approving_at_the_same_instant_start_it_once(settings_factory, tmp_path):
    import time

    settings = settings_factory(
        hosts={"prod-web-01": {"ssh": {"host": "127.0.0.1", "port": 22, "user": "u"}}}
    )
    db = tmp_path / "race.db"
    svc = build_services(settings, Secrets(), db, slack=False)
    svc.engine = StandInEngine()
    try:
        for round_ in range(ROUNDS):
            request = approvals.create_request(
                svc,
                runbook="add-swap",
                host="prod-web-01",
                params={"size": f"{round_ + 2}G"},
                requested_by="U0CAROL",
            )
            start = time.time() + 1.5  # both are up and waiting by then
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _APPROVER.format(
                            tests=str(ROOT / "tests"),
                            settings=settings.model_dump(mode="json"),
                            db=str(db),
                            start=start,
                            request_id=request.id,
                            user=user,
                        ),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                for user in ("U0ALICE", "U0BOB")
            ]
            outs = [p.communicate(timeout=60)[0].strip() for p in procs]
            raced("2 processes")
            assert sorted(outs) == ["already", "started"], outs
        assert svc.audit.verify().ok
    finally:
        svc.close()


async def test_real_engine_executes_once_under_a_click_storm(slack_bot, sshd, monkeypatch):
    """The real engine behind the buttons: one ``execution.started`` row and one execution
    however many approvers click at once."""
    name = register_blocking_runbook(monkeypatch, seconds=0.3)
    bot = await slack_bot(engine=Engine(timing=FAST), hosts={"prod-web-01": sshd.host_config()})
    for _ in range(ROUNDS):
        request = await bot.ask(f"run {name} prod-web-01", user="U0CAROL")
        clicks = [
            bot.click("approve_request", request.id, user=("U0ALICE", "U0BOB")[n % 2])
            for n in range(16)
        ]
        await asyncio.gather(*clicks)
        await bot.settle()
        raced("16 clicks, real engine")
        started = bot.services.audit.list(request_id=request.id, action="execution.started")
        assert len(started) == 1, started
        rows = bot.services.db.query(
            "SELECT count(*) AS n FROM executions WHERE request_id = ?", (request.id,)
        )
        assert rows[0]["n"] == 1
        assert approvals.get_request(bot.services, request.id).state == "succeeded"
    assert json.loads(json.dumps(RACES))  # figures stay printable
