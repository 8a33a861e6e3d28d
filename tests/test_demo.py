"""`stabilize demo --script`: the whole loop on the embedded sandbox, from a clean directory."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import clean_environ

from commands.cli import main

pytest.importorskip("moto", reason="the 'demo' extra is not installed")

STABILIZE = Path(sys.executable).with_name("stabilize")
if not STABILIZE.exists():
    STABILIZE = Path(shutil.which("stabilize") or "stabilize")


def clean_env(home: Path) -> dict[str, str]:
    """No Slack, no AWS, no config of the developer's: the demo must need none of them."""
    env = clean_environ()
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess, Path, float]:
    workdir = tmp_path_factory.mktemp("clean")
    started = time.monotonic()
    result = subprocess.run(
        [str(STABILIZE), "demo", "--script"],
        cwd=workdir,
        env=clean_env(workdir),
        capture_output=True,
        text=True,
        timeout=240,
    )
    elapsed = time.monotonic() - started
    print(f"stabilize demo --script took {elapsed:.1f}s")  # measured and reported, not asserted
    return result, workdir, elapsed


def test_demo_shows_the_whole_loop(
    demo_run: tuple[subprocess.CompletedProcess, Path, float],
) -> None:
    result, _, _ = demo_run
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "nothing real is touched" in out and "not this machine's swap" in out
    assert re.search(r"/alerts/sns → 200", out)
    assert re.search(r"Incident \d+ opened for prod-web-01", out)
    assert "this machine, local runner" in out  # the host facts are labelled as local
    assert re.search(r"Diagnosis posted: .*CPU sustained", out)
    assert "presses Approve" in out and "Approved" in out
    assert re.search(r"Sandbox instance i-[0-9a-f]+: t3\.micro → t3\.small", out)
    assert "audit chain intact" in out
    assert "Demo complete" in out


def test_demo_leaves_a_verifiable_audit_log(
    demo_run: tuple[subprocess.CompletedProcess, Path, float],
) -> None:
    result, workdir, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    db = workdir / "stabilize-demo.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT actor, action, runbook, detail FROM audit_events ORDER BY id"
        ).fetchall()
    actions = [r[1] for r in rows]
    for expected in (
        "alert.received",
        "incident.opened",
        "diagnosis.posted",
        "request.created",
        "request.approved",
        "execution.started",
        "execution.succeeded",
    ):
        assert expected in actions, f"no {expected} in {actions}"
    assert actions.index("incident.opened") < actions.index("diagnosis.posted")
    assert actions.index("request.approved") < actions.index("execution.succeeded")
    [diagnosis] = [json.loads(r[3]) for r in rows if r[1] == "diagnosis.posted"]
    assert diagnosis["findings"], "the diagnosis has no findings"
    [approved] = [r for r in rows if r[1] == "request.approved"]
    assert approved[0] == "U0DEMO" and approved[2] == "resize-instance"

    # The review commands work on the file the demo left behind.
    env = {"STABILIZE_DB": str(db)}
    verify = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert verify.exit_code == 0, verify.output
    incident = re.search(r"Incident (\d+) opened", result.stdout).group(1)
    timeline = CliRunner().invoke(main, ["audit", "timeline", incident, "--markdown"], env=env)
    assert timeline.exit_code == 0, timeline.output
    assert "resize-instance succeeded" in timeline.output
    assert "Time to mitigation" in timeline.output


def test_demo_without_the_extra_says_how_to_fix_it(tmp_path: Path) -> None:
    # A moto that cannot be imported, ahead of the real one on the path.
    (tmp_path / "moto").mkdir()
    (tmp_path / "moto" / "__init__.py").write_text("raise ImportError('no moto here')\n")
    env = {**clean_env(tmp_path), "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(STABILIZE), "demo", "--script"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "pip install -e '.[demo]'" in result.stderr


def test_without_a_terminal_the_demo_plays_itself(tmp_path: Path) -> None:
    # `./run demo` from a script or CI: nobody can press a button, so no prompt to abort at.
    result = subprocess.run(
        [str(STABILIZE), "demo"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stdin is not a terminal: running the demo as --script" in result.stdout
    assert "--script: pressing [" in result.stdout and "Demo complete" in result.stdout
    assert "Aborted" not in result.stdout + result.stderr
