"""`stabilize shell`: the Slack commands, messages and numbered buttons in a terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import write_config
from slack_fixtures import BASE_CONFIG, StandInEngine

from bot.config import Secrets, parse_settings
from bot.services import build_services
from bot.terminal import TerminalTransport
from commands.shell import ShellSession

ROOT = Path(__file__).resolve().parent.parent


def button_number(output: str, label: str) -> str:
    """The number of the last button called ``label`` printed so far."""
    found = re.findall(rf"\[(\d+)\] {label}", output)
    assert found, f"no [{label}] button in:\n{output}"
    return found[-1]


async def test_policy_can_be_tried_as_several_people(tmp_path):
    out = io.StringIO()
    terminal = TerminalTransport(out)
    settings = parse_settings(BASE_CONFIG, source="<test>")
    services = build_services(settings, Secrets(), tmp_path / "s.db", transport=terminal)
    services.engine = StandInEngine()
    services.outbox.post_interval = services.outbox.update_interval = 0.0
    session = ShellSession(services, terminal, "U0CAROL", out)
    session.start()
    try:
        await session.handle("/stabilize run add-swap prod-web-01 size=2G")
        shown = out.getvalue()
        assert "== Approval needed: add-swap on prod-web-01 ==" in shown
        assert "fallocate -l 2G /swapfile" in shown
        assert "Requested by @U0CAROL" in shown
        approve = button_number(shown, "Approve")

        await session.handle(approve)  # Carol may not approve her own request
        assert "(only U0CAROL sees this) Not allowed" in out.getvalue()
        await session.handle("as U0ALICE")
        await session.handle(approve)
        shown = out.getvalue()
        assert "Approved by @U0ALICE — running" in shown
        assert "↳ step 1/2 on prod-web-01: fallocate" in shown
        assert "Succeeded: add-swap on prod-web-01" in shown
        assert len(services.engine.executed) == 1

        await session.handle(approve)  # the old button is gone with its message
        assert "there is no button" in out.getvalue()
        await session.handle("audit prod-web-01")
        assert "request.approved 1" in out.getvalue()
        assert await session.handle("quit") is False
    finally:
        await session.stop()
        services.close()


def test_the_shell_command_runs_the_real_engine_in_dry_run(tmp_path):
    config = write_config(tmp_path, BASE_CONFIG)
    env = {
        **os.environ,
        "STABILIZE_DB": str(tmp_path / "shell.db"),
        "STABILIZE_CONFIG": str(config),
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never called: the shell has no Slack
    }
    env.pop("SLACK_BOT_TOKEN", None)
    script = "help\nfrobnicate now\nrun add-swap prod-web-01 size=2G\nas U0BOB\n{n}\nquit\n"

    def shell(stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "commands.cli", "shell", "--as", "U0ALICE", "--dry-run"],
            input=stdin,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # The first button printed in a fresh database is [1] Approve.
    result = shell(script.format(n=1))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stabilize shell — you are U0ALICE" in out
    assert "/stabilize run <runbook> <host>" in out  # help
    assert "Unknown sub-command `frobnicate`" in out
    assert "[1] Approve   [2] Reject" in out
    assert "U0BOB clicked [1] Approve" in out
    assert "Dry run" in out and "swapon" in out
    assert "Traceback" not in result.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "commands.cli", "shell", "--as", "alice"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --as needs a Slack user id")
