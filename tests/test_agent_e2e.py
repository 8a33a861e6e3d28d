"""The agent against a real ``stabilize serve`` on loopback (Slack stand-in, moto for the
diagnosis): an OOM kill reaches the bot within 2 s naming the victim and shows up in Slack;
memory pressure opens one incident and resolves it once; with the bot down for a while,
everything arrives afterwards, in order, once."""

# ruff: noqa: F811 - pytest fixtures imported from test_agent_receiver

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_for_port, wait_until
from test_agent_receiver import box, run_agent  # noqa: F401


class Bot:
    """``stabilize serve`` as a child on one port; can be stopped and started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.db = env["STABILIZE_DB"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "commands.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = self.proc
        wait_for_port(self.port, timeout=30, alive=lambda: proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def alerts(self, alarm: str | None = None) -> list[dict[str, Any]]:
        """What the bot recorded from the agent, in arrival order (the start-up hello left out)."""
        if not Path(self.db).exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(
                "SELECT * FROM alerts WHERE source = 'agent' AND alarm != 'custom' ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet
        finally:
            conn.close()
        out = [dict(r, details=json.loads(r["details"])) for r in rows]
        return [a for a in out if alarm is None or a["alarm"] == alarm]

    def incidents(self, alarm: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM incidents WHERE alarm = ? ORDER BY id", (alarm,))
            return [dict(r) for r in rows]
        finally:
            conn.close()


@pytest.fixture
def bot(stabilize_env, aws_env, tmp_path):
    server = Bot({**os.environ, **stabilize_env}, tmp_path / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def slack_text(slack_api) -> str:
    return json.dumps(slack_api.messages("C0ALERTS"))


def test_the_agent_and_a_real_bot(box, bot, run_agent, slack_api):
    agent = run_agent(bot.url)
    agent.wait_for_log("connected")
    assert "error" not in agent.log().lower()

    # An OOM kill reaches the bot within 2 s, naming the victim, and Slack hears of it.
    box.oom("oom-5.15.log")
    appended = time.monotonic()
    wait_until(lambda: bot.alerts("oom_kill"))
    assert time.monotonic() - appended < 2.0
    [oom] = bot.alerts("oom_kill")
    assert oom["details"]["victim"] == "mysqld" and "mysqld" in oom["summary"]
    assert oom["outcome"] == "opened"
    wait_until(lambda: "OOM killer killed mysqld" in slack_text(slack_api), timeout=15)

    # Memory pressure: one incident, fired once, resolved once, and Slack says Resolved.
    box.pressure(high=True)
    wait_until(lambda: bot.alerts("memory_pressure"))
    time.sleep(1.0)
    box.pressure(high=False)
    wait_until(lambda: len(bot.alerts("memory_pressure")) == 2)
    time.sleep(1.0)
    pressure = bot.alerts("memory_pressure")
    assert [a["status"] for a in pressure] == ["firing", "resolved"]
    [incident] = bot.incidents("memory_pressure")
    assert incident["state"] == "resolved" and incident["count"] == 1
    wait_until(lambda: "Resolved: INC-" in slack_text(slack_api), timeout=15)

    # The bot is down for a while; afterwards everything arrives, in order, once.
    bot.stop()
    box.oom_kill(2001, "php-fpm")
    wait_until(lambda: len(box.spooled()) == 1)
    box.pressure(high=True)
    wait_until(lambda: len(box.spooled()) == 2)
    box.oom_kill(2002, "redis-server")
    wait_until(lambda: len(box.spooled()) == 3)
    box.pressure(high=False)
    wait_until(lambda: len(box.spooled()) == 4)
    time.sleep(1.0)  # failed retries while the bot is away
    bot.start()
    wait_until(lambda: not box.spooled(), timeout=20)
    time.sleep(1.0)  # and nothing is sent twice
    later = bot.alerts()[3:]
    assert [(a["alarm"], a["status"], a["details"].get("victim")) for a in later] == [
        ("oom_kill", "firing", "php-fpm"),
        ("memory_pressure", "firing", None),
        ("oom_kill", "firing", "redis-server"),
        ("memory_pressure", "resolved", None),
    ]
    assert [i["state"] for i in bot.incidents("memory_pressure")] == ["resolved", "resolved"]
    # The start-up hellos were checked and recorded, but opened nothing and posted nothing.
    assert bot.incidents("custom") == []
    assert "stabilize agent started" not in slack_text(slack_api)
