# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""/alerts/agent: signed agent alerts open, update and resolve one incident message."""

from __future__ import annotations

import json
import time

from intake_fixtures import (  # noqa: F401
    bot_server,
    diagnoses,
    payload,
    start_bot,
    top_level,
    until,
)


async def test_a_signed_agent_alert_opens_one_incident_message_and_starts_a_diagnosis(
    bot_server, agent_signer, slack_api, diagnoses
):
    body, headers = agent_signer.sign(payload("agent_oom.json"))
    status, answer = await bot_server.post("/alerts/agent", body, headers)
    assert status == 200, answer
    assert answer["incidents"][0]["result"] == "opened"
    incident_id = answer["incidents"][0]["incident_id"]
    # Committed before the answer: the audit log already has it.
    actions = [e["action"] for e in bot_server.audit()]
    assert actions == ["alert.received", "incident.opened"]
    assert diagnoses.calls == [("prod-web-01", incident_id)]
    [message] = await until(lambda: top_level(slack_api))
    assert f"INC-{incident_id}" in message["text"]
    assert "oom_kill on prod-web-01" in message["text"]
    assert "Out of memory: Killed process 4242" in json.dumps(message["blocks"])
    assert bot_server.services.outbox.message(f"incident:{incident_id}")["ts"] == message["ts"]


async def test_repeats_update_the_same_message_and_resolve_says_resolved(
    bot_server, agent_signer, slack_api
):
    alert = payload("agent_oom.json")
    # Each sent at its own second, as the agent does. One base time for all three: ages taken
    # from a clock that ticks between them could land on the same second (a replay).
    base = int(time.time())
    for age in range(3):
        signed = agent_signer.sign(alert, timestamp=base - age)
        status, _ = await bot_server.post("/alerts/agent", *signed)
        assert status == 200
    await until(lambda: "3 alerts" in (top_level(slack_api) or [{"text": ""}])[0]["text"])
    status, answer = await bot_server.post(
        "/alerts/agent", *agent_signer.sign({**alert, "resolved": True})
    )
    assert status == 200 and answer["incidents"][0]["result"] == "resolved"
    await until(lambda: top_level(slack_api)[0]["text"].startswith("Resolved"))
    [message] = top_level(slack_api)
    assert "*Resolved*" in json.dumps(message["blocks"])
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert [e["action"] for e in bot_server.audit()] == [
        "alert.received",
        "incident.opened",
        "alert.deduplicated",
        "alert.deduplicated",
        "alert.received",
        "incident.resolved",
    ]
    # Firing again after the resolve is a new incident with its own message.
    status, answer = await bot_server.post("/alerts/agent", *agent_signer.sign(alert, age=-5))
    assert answer["incidents"][0]["result"] == "opened"
    await until(lambda: len(top_level(slack_api)) == 2)
    assert [i["state"] for i in bot_server.incidents()] == ["resolved", "open"]


async def test_bad_signatures_are_refused_with_401_and_audited(bot_server, agent_signer):
    alert = payload("agent_oom.json")
    body, headers = agent_signer.sign(alert)
    cases = [
        {**headers, "X-Stabilize-Signature": "sha256=" + "0" * 64},
        {k: v for k, v in headers.items() if k != "X-Stabilize-Signature"},
        agent_signer.headers(body, age=600),  # stale
        agent_signer.headers(body, age=-600),  # from the future
        {**headers, "X-Stabilize-Timestamp": "yesterday"},
    ]
    for bad in cases:
        status, answer = await bot_server.post("/alerts/agent", body, bad)
        assert status == 401, answer
        assert "\n" not in answer["error"]
    # A body changed after signing does not verify either.
    status, _ = await bot_server.post("/alerts/agent", body.replace(b"4242", b"4243"), headers)
    assert status == 401
    assert bot_server.incidents() == []
    assert {e["action"] for e in bot_server.audit()} == {"auth.rejected"}
    assert len(bot_server.audit("auth.rejected")) == len(cases) + 1
    assert agent_signer.token not in json.dumps(bot_server.audit())


async def test_bad_bodies_get_400_with_one_line_naming_the_fix(bot_server, agent_signer):
    alert = payload("agent_oom.json")
    cases = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "expected a JSON object",
        json.dumps({**alert, "kind": "meltdown"}).encode(): "'kind' must be one of",
        json.dumps({**alert, "severity": "huge"}).encode(): "'severity' must be one of",
        json.dumps({**alert, "host": "web; rm -rf /"}).encode(): "'host' must be a host name",
        json.dumps({**alert, "details": "x"}).encode(): "'details' must be an object",
        json.dumps({**alert, "resolved": "yes"}).encode(): "'resolved' must be true or false",
    }
    for body, reason in cases.items():
        status, answer = await bot_server.post("/alerts/agent", *agent_signer.sign(body))
        assert status == 400, (body, answer)
        assert reason in answer["error"]
    assert bot_server.incidents() == []
    assert len(bot_server.audit("input.rejected")) == len(cases)


async def test_a_body_over_256_kib_gets_400_not_413(bot_server, agent_signer):
    alert = {**payload("agent_oom.json"), "details": {"blob": "x" * (300 * 1024)}}
    status, answer = await bot_server.post("/alerts/agent", *agent_signer.sign(alert))
    assert status == 400
    assert "256 KiB" in answer["error"]
    assert bot_server.incidents() == []
    assert len(bot_server.audit("input.rejected")) == 1


async def test_a_replayed_request_is_refused_but_a_resent_alert_is_not(bot_server, agent_signer):
    alert = payload("agent_oom.json")
    body, headers = agent_signer.sign(alert)
    assert (await bot_server.post("/alerts/agent", body, headers))[0] == 200
    status, answer = await bot_server.post("/alerts/agent", body, headers)
    assert status == 401 and "replayed" in answer["error"]
    # The agent re-signs what it sends again: that is a repeat of the alert, not a replay.
    resent = agent_signer.sign(alert, timestamp=int(headers["X-Stabilize-Timestamp"]) + 1)
    status, answer = await bot_server.post("/alerts/agent", *resent)
    assert status == 200 and answer["incidents"][0]["result"] == "deduplicated"
    assert [i["count"] for i in bot_server.incidents()] == [2]
    assert len(bot_server.audit("auth.rejected")) == 1


async def test_a_replay_after_a_restart_is_refused_by_the_stored_request_id(
    bot_server, agent_signer, tmp_path, slack_api, settings_factory
):
    body, headers = agent_signer.sign(payload("agent_oom.json"))
    assert (await bot_server.post("/alerts/agent", body, headers))[0] == 200
    [row] = bot_server.services.db.query("SELECT external_id FROM alerts")
    timestamp, signature = headers["X-Stabilize-Timestamp"], headers["X-Stabilize-Signature"]
    assert row["external_id"] == f"{timestamp}:{signature}"
    # A second bot on the same database, as after a restart: it remembers from the table.
    restarted, runner = await start_bot(tmp_path, slack_api, settings_factory())
    try:
        status, answer = await restarted.post("/alerts/agent", body, headers)
        assert status == 401 and "replayed" in answer["error"]
        resent = agent_signer.sign(payload("agent_oom.json"), timestamp=int(timestamp) + 1)
        assert (await restarted.post("/alerts/agent", *resent))[0] == 200
    finally:
        await restarted.session.close()
        await runner.cleanup()
        restarted.services.close()
    assert len(bot_server.services.db.query("SELECT id FROM alerts")) == 2
