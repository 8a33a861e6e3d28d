"""The diagnosis message as Block Kit: what a Slack user sees, within Slack's limits."""

from __future__ import annotations

import json

from diagnosis_fixtures import facts

from bot.blocks.diagnosis import diagnosis_blocks, diagnosis_text
from bot.diagnosis import Diagnosis
from bot.diagnosis_rules import Finding, evaluate


def diagnosis_of(name: str) -> Diagnosis:
    f = facts(name)
    result = evaluate(f)
    return Diagnosis(f.host, f, result.findings, result.recommendations, id=42)


def test_header_findings_evidence_and_one_button_per_recommendation():
    d = diagnosis_of("oom_no_swap")
    blocks = diagnosis_blocks(d, [101, 102])
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Diagnosis: prod-web-01"},
    }
    text = json.dumps(blocks, ensure_ascii=False)
    assert ":red_circle: *OOM killer ran 2× in the last 24 h and there is no swap*" in text
    assert "killed mysqld (pid 812" in text
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in actions["elements"]] == [
        ("recommend_1", "101", "Run add-swap size=1G"),
        ("recommend_2", "102", "Run resize-instance type=t3.small"),
    ]
    assert diagnosis_text(d).startswith("Diagnosis of prod-web-01: OOM killer ran 2×")
    assert "Recommended: add-swap size=1G, resize-instance type=t3.small" in diagnosis_text(d)


def test_advice_without_a_button_and_a_healthy_host():
    colocated = json.dumps(diagnosis_blocks(diagnosis_of("colocated_db"), []), ensure_ascii=False)
    assert ":bulb: move mysqld to a managed service" in colocated
    assert '"actions"' not in colocated
    healthy = diagnosis_blocks(diagnosis_of("healthy"), [])
    assert ":large_green_circle: *Healthy" in json.dumps(healthy, ensure_ascii=False)


def test_what_could_not_be_gathered_is_shown():
    d = diagnosis_of("ssh_timeout")
    text = json.dumps(diagnosis_blocks(d, [7]), ensure_ascii=False)
    assert "Could not gather" in text and "timed out after 10s" in text


def test_huge_diagnoses_stay_within_slack_limits_and_user_text_is_escaped():
    d = diagnosis_of("healthy")
    d.findings = [
        Finding("warning", f"finding <{n}> & more", [f"<evidence> {i}" * 50 for i in range(30)])
        for n in range(80)
    ]
    blocks = diagnosis_blocks(d, [])
    assert len(blocks) <= 50
    for b in blocks:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= 3000
    assert "<evidence>" not in json.dumps(blocks, ensure_ascii=False)
    assert "&lt;evidence&gt;" in json.dumps(blocks, ensure_ascii=False)
