"""Posting a diagnosis: stored, audited, delivered to Slack with one button per recommended
runbook; the button's value loads the recommendation back. And ``stabilize diagnose``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from diagnosis_fixtures import make_world
from helpers import write_config

from bot.config import Secrets
from bot.diagnosis import diagnose_and_post, load_recommendation
from bot.errors import InputError
from bot.services import build_services
from commands.cli import main


@pytest.fixture
def services(aws_env, slack_api, settings_factory, tmp_path):
    iid = make_world()
    settings = settings_factory(hosts={"prod-web-01": {"instance_id": iid}})
    secrets = Secrets(slack_bot_token=slack_api.token, slack_api_url=slack_api.url)
    built = build_services(settings, secrets, tmp_path / "stabilize.db")
    built.outbox.post_interval = 0.0
    yield built
    built.close()


def _buttons(blocks):
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_diagnosis_is_posted_with_a_button_per_recommendation(services, slack_api):
    d = await diagnose_and_post(services, "prod-web-01", requested_by="U0ALICE")
    assert await services.outbox.drain(timeout=10)
    [post] = slack_api.calls("chat.postMessage")
    assert post.args["channel"] == "C0ALERTS"
    blocks = post.args["blocks"]
    assert blocks[0]["text"]["text"] == "Diagnosis: prod-web-01"
    text = json.dumps(blocks)
    assert "CPU sustained at 95 %" in text and "Memory pressure: 97 % used" in text
    buttons = _buttons(blocks)
    assert [b["action_id"] for b in buttons] == [
        f"recommend_{n}" for n in range(1, len(d.recommendations) + 1)
    ]
    for button, rec in zip(buttons, d.recommendations, strict=True):
        stored = load_recommendation(services, button["value"])
        assert stored is not None
        assert (stored.runbook, stored.host, stored.params) == (
            rec.runbook,
            "prod-web-01",
            rec.params,
        )
        assert stored.reason == rec.reason and stored.evidence
        assert stored.thread_key == f"diagnosis:{d.id}"  # approvals go in its thread
    [row] = services.audit.list(action="diagnosis.posted")
    assert row["actor"] == "U0ALICE" and row["host"] == "prod-web-01"
    detail = json.loads(row["detail"])
    assert detail["facts"]["instance_type"] == "t3.micro"
    assert detail["facts"]["cpu_avg_1h"] == 95.0
    assert detail["recommendations"] == [r.label() for r in d.recommendations]
    metrics = services.metrics.render()[0].decode()
    assert 'stabilize_diagnoses_total{aws="ok",ssh="skipped"} 1.0' in metrics


async def test_an_incident_diagnosis_goes_in_the_incident_thread(services):
    d = await diagnose_and_post(
        services,
        "prod-web-01",
        requested_by="system",
        incident_id=7,
        thread_key="incident:7",
    )
    row = services.db.query_one("SELECT * FROM outbox WHERE key = ?", (f"diagnosis:{d.id}",))
    assert row["thread_key"] == "incident:7"
    [audit] = services.audit.list(action="diagnosis.posted")
    assert (audit["actor"], audit["incident_id"]) == ("system", "7")
    rec_id = _buttons(json.loads(row["blocks"]))[0]["value"]
    rec = load_recommendation(services, rec_id)
    assert rec is not None and (rec.incident_id, rec.thread_key) == ("7", "incident:7")


async def test_unknown_host_posts_nothing(services, slack_api):
    with pytest.raises(InputError, match="unknown host 'ghost-01'"):
        await diagnose_and_post(services, "ghost-01", requested_by="U0ALICE")
    assert services.outbox.pending() == 0
    assert services.db.query("SELECT * FROM diagnoses") == []
    assert services.audit.list(action="diagnosis.posted") == []


def test_malformed_or_unknown_recommendation_ids_load_nothing(tmp_db, settings_factory, tmp_path):
    built = build_services(settings_factory(), Secrets(), tmp_path / "stabilize.db", slack=False)
    try:
        for value in ("", "abc", "999", "1; DROP TABLE x", "-1"):
            assert load_recommendation(built, value) is None
    finally:
        built.close()


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_env(aws_env, tmp_path, monkeypatch):
    iid = make_world()
    config = write_config(
        tmp_path,
        {"slack": {"channel": "C0ALERTS"}, "hosts": {"prod-web-01": {"instance_id": iid}}},
    )
    monkeypatch.setenv("STABILIZE_CONFIG", str(config))
    monkeypatch.setenv("STABILIZE_DB", str(tmp_path / "cli.db"))
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    return tmp_path


def test_cli_json_is_exactly_the_contract(cli_env):
    result = CliRunner().invoke(main, ["diagnose", "prod-web-01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"host", "facts", "findings", "recommendations", "errors"}
    assert data["host"] == "prod-web-01"
    assert all(set(f) == {"severity", "title", "evidence"} for f in data["findings"])
    assert all(set(r) == {"runbook", "params", "reason"} for r in data["recommendations"])
    assert any("no SSH settings" in e for e in data["errors"])
    assert data["facts"]["instance"]["type"] == "t3.micro"


def test_cli_text_is_readable_and_audited_not_posted(cli_env):
    result = CliRunner().invoke(main, ["diagnose", "prod-web-01"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Diagnosis of prod-web-01")
    assert "[WARNING] CPU sustained at 95 %" in result.stdout
    assert "Recommended runbooks" in result.stdout
    from bot.db import Database

    db = Database(cli_env / "cli.db")
    try:
        rows = db.query("SELECT actor, detail FROM audit_events WHERE action = 'diagnosis.posted'")
        assert len(rows) == 1 and rows[0]["actor"].startswith("cli:")
        assert json.loads(rows[0]["detail"])["posted_to"] == "terminal"
        assert db.query("SELECT * FROM outbox") == []
    finally:
        db.close()


@pytest.mark.parametrize("host", ["ghost-01", "bad name;rm"])
def test_cli_unknown_host_is_one_line_and_exit_2(cli_env, host):
    result = CliRunner().invoke(main, ["diagnose", host])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
    from bot.db import Database

    db = Database(cli_env / "cli.db")
    try:
        actions = [r["action"] for r in db.query("SELECT action FROM audit_events")]
        assert actions == ["input.rejected"]
        assert db.query("SELECT * FROM outbox") == []
    finally:
        db.close()
