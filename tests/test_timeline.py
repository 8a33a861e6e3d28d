"""`stabilize audit timeline`: an incident's story for the postmortem, from its audit rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.audit import AuditLog
from bot.db import Database, iso
from commands.cli import main

T0 = datetime(2026, 12, 4, 9, 0, 5, tzinfo=UTC)

# (seconds after T0, actor, action, fields) — a recorded incident 42 on prod-web-01, plus an
# unrelated incident 41 on another host that must not leak into the story.
RECORDED = [
    (0, "sns", "alert.received", {"detail": {"alertname": "prod-web-01-cpu-high"}}),
    (0, "system", "incident.opened", {"detail": {"title": "CPU above 90%"}}),
    (1, "agent", "alert.received", {"host": "db-01", "incident_id": "41", "detail": {}}),
    (
        20,
        "system",
        "diagnosis.posted",
        {
            "detail": {
                "findings": [
                    {"severity": "critical", "title": "CPU pinned at 97%", "evidence": "…"},
                    {"severity": "warning", "title": "t3.micro has 1 GiB", "evidence": "…"},
                ]
            }
        },
    ),
    (
        60,
        "U0ALICE",
        "request.created",
        {
            "runbook": "resize-instance",
            "request_id": "R-7",
            "detail": {"params": {"type": "t3.large"}},
        },
    ),
    (90, "U0CAROL", "request.denied", {"runbook": "resize-instance", "request_id": "R-7"}),
    (120, "U0BOB", "request.approved", {"runbook": "resize-instance", "request_id": "R-7"}),
    # The engine's rows may carry only the request id: they still belong to incident 42.
    (
        121,
        "system",
        "execution.started",
        {"runbook": "resize-instance", "request_id": "R-7", "incident_id": None},
    ),
    (
        151,
        "system",
        "execution.step",
        {
            "runbook": "resize-instance",
            "request_id": "R-7",
            "incident_id": None,
            "detail": {"n": 1, "step": "snapshot volumes", "ok": True, "output": "snap-1 done"},
        },
    ),
    (
        271,
        "system",
        "execution.step",
        {
            "runbook": "resize-instance",
            "request_id": "R-7",
            "incident_id": None,
            "detail": {"n": 2, "step": "stop instance", "ok": True, "duration": 95.0},
        },
    ),
    (
        300,
        "system",
        "execution.succeeded",
        {"runbook": "resize-instance", "request_id": "R-7", "incident_id": None, "detail": {}},
    ),
    (600, "sns", "incident.resolved", {"detail": {"reason": "alarm OK"}}),
]


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "stabilize.db"
    db = Database(path)
    audit = AuditLog(db)
    for offset, actor, action, fields in RECORDED:
        # The audit log stamps rows itself; pin its clock so the durations are known.
        stamp = iso(T0 + timedelta(seconds=offset))
        monkeypatch.setattr("bot.audit.iso", lambda stamp=stamp: stamp)
        kwargs = {"host": "prod-web-01", "incident_id": "42", **fields}
        audit.append(actor, action, **kwargs)
    monkeypatch.undo()
    db.close()
    monkeypatch.setenv("STABILIZE_DB", str(path))
    yield path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "timeline", *args])
    return result.exit_code, result.output


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| 2026")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_markdown_tells_the_story_in_order_with_actors_and_durations(recorded: Path) -> None:
    code, out = run("42", "--markdown")
    assert code == 0, out
    assert out.startswith("# Incident 42 on prod-web-01")
    rows = table_rows(out)
    assert [r[3] for r in rows] == [
        "alert.received",
        "incident.opened",
        "diagnosis.posted",
        "request.created",
        "request.denied",
        "request.approved",
        "execution.started",
        "execution.step",
        "execution.step",
        "execution.succeeded",
        "incident.resolved",
    ]
    by_event = {r[3]: r for r in rows}
    assert by_event["request.created"][2] == "U0ALICE"
    assert "resize-instance type=t3.large" in by_event["request.created"][4]
    assert by_event["request.denied"][2] == "U0CAROL"
    assert by_event["request.approved"][2] == "U0BOB"
    assert by_event["request.approved"][1] == "+2m"
    assert "CPU pinned at 97%" in by_event["diagnosis.posted"][4]
    steps = [r for r in rows if r[3] == "execution.step"]
    # Step 1 took from the start to its row; step 2 says its own duration.
    assert "snapshot volumes" in steps[0][4] and steps[0][5] == "30s"
    assert "stop instance" in steps[1][4] and steps[1][5] == "1m 35s"
    assert "- **Time to mitigation:** 5m" in out
    assert "- **Outcome:** resize-instance succeeded" in out
    assert "- **First alert:** 2026-12-04 09:00:05Z" in out
    assert (
        "- **Request:** resize-instance type=t3.large (R-7): asked by U0ALICE,"
        " U0CAROL not allowed to approve, approved by U0BOB" in out
    )
    assert "db-01" not in out


def test_the_postmortem_carries_the_audit_anchor_it_was_written_from(recorded: Path) -> None:
    code, out = run("42", "--markdown")
    assert code == 0, out
    anchor = AuditLog(Database(recorded)).verify().anchor
    assert anchor and anchor.startswith(f"{len(RECORDED)}:")
    assert out.rstrip().endswith(
        f"Audit log verified when this was written: {len(RECORDED)} events intact, anchor"
        f" `{anchor}`. To show later that the history up to here is unchanged:"
        f" `stabilize audit verify --anchor {anchor}`."
    )
    verify = CliRunner().invoke(main, ["audit", "verify", "--anchor", anchor])
    assert verify.exit_code == 0, verify.output


def test_a_postmortem_written_from_a_broken_log_says_so(recorded: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(recorded, isolation_level=None)
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("UPDATE audit_events SET actor = 'U0MALLORY' WHERE action = 'request.approved'")
    conn.close()
    code, out = run("42", "--markdown")
    assert code == 0, out
    assert "**The audit log did not verify when this was written:** audit chain broken at" in out
    assert "anchor `" not in out


def test_terminal_table_shows_the_same_story(recorded: Path) -> None:
    code, out = run("42")
    assert code == 0, out
    for text in ("U0BOB", "request.approved", "Time to mitigation", "5m", "succeeded"):
        assert text in out


def test_the_id_as_slack_shows_it_works_too(recorded: Path) -> None:
    code, out = run("INC-42", "--markdown")
    assert code == 0, out
    assert out.startswith("# Incident 42 on prod-web-01")


def test_unknown_incident_names_the_recent_ones(recorded: Path) -> None:
    code, out = run("999")
    assert code == 2
    assert out.count("\n") == 1
    assert "no incident '999'" in out and "42, 41" in out
