# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Alert storms: 5,000 alerts for 10 hosts → 10 incident messages, bounded updates, every
alert in the audit log — also while Slack rate-limits us, and across a SIGKILL of the server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest
from helpers import free_port, stop_process
from intake_fixtures import bot_server, diagnoses, top_level, until  # noqa: F401

from bot.db import Database

HOSTS = [f"storm-{n:02d}" for n in range(10)]
ALERTS = 5000


def storm_alert(n: int) -> dict:
    return {
        "host": HOSTS[n % len(HOSTS)],
        "kind": "memory_pressure",
        "severity": "warning",
        "summary": f"storm #{n}",
        "details": {"seq": n},
    }


async def send_storm(url: str, signer, *, concurrency: int = 24, on_progress=None) -> int:
    """Send every alert until it gets a 200 (like a sender that retries what got no answer);
    returns how many retries were needed."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(ALERTS):
        queue.put_nowait(n)
    retries = 0
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal retries, done
        while not queue.empty():
            n = queue.get_nowait()
            while True:
                body, headers = signer.sign(storm_alert(n))
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                        text = await resp.text()
                        # A retry signed in the same second as a stored attempt is a replay:
                        # like the agent, wait and sign anew.
                        assert resp.status >= 500 or "replayed" in text, (resp.status, text)
                        pause = 1.0 if resp.status == 401 else 0.05
                except (aiohttp.ClientError, TimeoutError):
                    pause = 0.05
                retries += 1
                await asyncio.sleep(pause)
            done += 1
            if on_progress is not None:
                await on_progress(done)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return retries


def audited_alerts(db: Database) -> list[dict]:
    return db.query(
        "SELECT host, action, detail FROM audit_events"
        " WHERE action IN ('alert.received', 'alert.deduplicated')"
    )


def assert_nothing_lost(db: Database) -> None:
    rows = audited_alerts(db)
    seen = {json.loads(r["detail"])["summary"] for r in rows}
    assert seen == {f"storm #{n}" for n in range(ALERTS)}, "alerts missing from the audit log"
    assert [r["action"] for r in rows].count("alert.received") == len(HOSTS)
    incidents = db.query("SELECT host, count, state FROM incidents ORDER BY host")
    assert [i["host"] for i in incidents] == HOSTS
    assert sum(i["count"] for i in incidents) == len(rows)
    assert db.query_one("SELECT count(*) AS n FROM alerts")["n"] == len(rows)


def final_messages_show_counts(slack_api, db: Database) -> bool:
    counts = {i["id"]: i["count"] for i in db.query("SELECT id, count FROM incidents")}
    messages = top_level(slack_api)
    if len(messages) != len(HOSTS):
        return False
    shown = {}
    for m in messages:
        key = m["metadata"]["event_payload"]["key"]
        shown[int(key.split(":")[1])] = m["text"]
    return all(f"{counts[i]} alerts" in shown.get(i, "") for i in counts)


def assert_updates_bounded(slack_api) -> None:
    by_message = defaultdict(list)
    for call in slack_api.calls("chat.update"):
        if call.ok:
            by_message[call.args["ts"]].append(call.time)
    for times in by_message.values():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(gap >= 0.95 for gap in gaps), f"updates closer than 1s: {gaps}"
    total = sum(len(t) for t in by_message.values())
    assert total < ALERTS // 20, f"{total} chat.update calls for {ALERTS} alerts"


def assert_ten_messages_no_duplicates(slack_api) -> None:
    posted = [c for c in slack_api.calls("chat.postMessage") if c.ok]
    keys = [c.args["metadata"]["event_payload"]["key"] for c in posted]
    assert len(keys) == len(set(keys)), "a message was posted twice"
    assert len(top_level(slack_api)) == len(HOSTS)
    times = [c.time for c in posted]  # one channel: at most one post a second
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), f"posts closer than 1s: {gaps}"


@pytest.mark.slow
async def test_a_storm_makes_ten_incident_messages_and_loses_nothing(
    bot_server, agent_signer, slack_api, diagnoses
):
    await send_storm(f"{bot_server.url}/alerts/agent", agent_signer)
    db = bot_server.services.db
    assert_nothing_lost(db)
    assert len(diagnoses.calls) == len(HOSTS)
    await until(lambda: final_messages_show_counts(slack_api, db), timeout=60)
    assert_ten_messages_no_duplicates(slack_api)
    assert_updates_bounded(slack_api)


@pytest.mark.slow
async def test_a_storm_while_slack_rate_limits_still_delivers_everything(
    bot_server, agent_signer, slack_api, diagnoses
):
    slack_api.fail_for(4, status=429, retry_after=1)
    await send_storm(f"{bot_server.url}/alerts/agent", agent_signer)
    db = bot_server.services.db
    assert_nothing_lost(db)
    await until(lambda: final_messages_show_counts(slack_api, db), timeout=60)
    assert any(c.status == 429 for c in slack_api.calls("chat.postMessage"))
    assert_ten_messages_no_duplicates(slack_api)
    assert_updates_bounded(slack_api)
    assert bot_server.services.outbox.failed() == []


def start_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@pytest.mark.slow
async def test_a_storm_survives_the_server_being_killed_and_restarted(
    stabilize_env, agent_signer, slack_api, aws_env, tmp_path
):
    env = {**os.environ, **stabilize_env}
    port = free_port()
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    procs = [start_serve(env, port, log)]
    killed = asyncio.Event()

    async def healthy() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_healthy() -> None:
        for _ in range(300):
            if await healthy():
                return
            assert procs[-1].poll() is None, log.read_text()
            await asyncio.sleep(0.05)
        raise TimeoutError(log.read_text())

    async def kill_and_restart(done: int) -> None:
        if done == ALERTS // 3 and not killed.is_set():
            killed.set()
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
            procs.append(start_serve(env, port, log))

    try:
        await wait_healthy()
        retries = await send_storm(
            f"{url}/alerts/agent", agent_signer, on_progress=kill_and_restart
        )
        assert killed.is_set() and retries > 0  # the kill really interrupted the storm
        db = Database(stabilize_env["STABILIZE_DB"])
        try:
            assert_nothing_lost(db)
            await until(lambda: final_messages_show_counts(slack_api, db), timeout=90)
        finally:
            db.close()
        assert_ten_messages_no_duplicates(slack_api)
        assert_updates_bounded(slack_api)
    finally:
        for proc in procs:
            stop_process(proc, timeout=10)
