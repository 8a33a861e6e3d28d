"""`stabilize audit browse`: the audit DB in Datasette, read-only, with canned queries."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, stop_process, wait_for_port

from bot.audit import AuditLog
from bot.db import Database

pytest.importorskip("datasette", reason="the 'browse' extra is not installed")


@pytest.fixture
def audit_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stabilize.db"
    db = Database(path)
    audit = AuditLog(db)
    common = {"host": "prod-web-01", "runbook": "resize-instance", "request_id": "R-1"}
    audit.append("sns", "alert.received", host="prod-web-01", incident_id="7")
    audit.append("U0ALICE", "request.created", incident_id="7", **common)
    audit.append("U0BOB", "request.approved", incident_id="7", **common)
    audit.append("system", "execution.started", **common)
    audit.append(
        "system", "execution.rolled_back", detail={"error": "status checks failed"}, **common
    )
    db.close()  # the bot is not running: what is on disk is all there is
    yield path


@pytest.fixture
def browse(audit_db: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "STABILIZE_DB": str(audit_db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "audit", "browse", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30, alive=lambda: proc.poll() is None)
        yield f"http://127.0.0.1:{port}/stabilize"
    finally:
        stop_process(proc, signal.SIGINT, timeout=10)


def get(url: str) -> list[dict]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def test_canned_queries_answer_and_the_file_stays_untouched(audit_db: Path, browse: str) -> None:
    before = audit_db.read_bytes()

    [incident] = get(f"{browse}/incidents.json?_shape=array")
    assert incident["incident_id"] == "7"
    assert incident["host"] == "prod-web-01"
    assert incident["failed"] == 1  # the rolled-back run, found through its request

    [decision] = get(f"{browse}/approvals.json?_shape=array")
    assert decision["decided_by"] == "U0BOB" and decision["requested_by"] == "U0ALICE"

    [failed] = get(f"{browse}/failed_executions.json?_shape=array")
    assert failed["error"] == "status checks failed" and failed["incident_id"] == "7"

    [host] = get(f"{browse}/per_host.json?_shape=array")
    assert host["host"] == "prod-web-01" and host["events"] == 5

    events = get(f"{browse}/host_events.json?host=prod-web-01&_shape=array")
    assert [e["action"] for e in events][0] == "execution.rolled_back"

    # Datasette refuses anything but reading.
    with pytest.raises(urllib.error.HTTPError):
        get(f"{browse}.json?sql=DELETE+FROM+audit_events&_shape=array")

    # Plain sqlite3 still reads it while it is open, and nothing was written.
    with sqlite3.connect(audit_db) as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 5
    assert audit_db.read_bytes() == before
    assert AuditLog(Database(audit_db)).verify().ok


def test_browse_help_names_the_extra() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "commands.cli", "audit", "browse", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "read-only" in out and ".[browse]" in out
