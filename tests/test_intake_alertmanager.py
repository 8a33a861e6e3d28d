# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""/alerts/alertmanager: the real Alertmanager fires at the bot; groups, tokens, bad bodies."""

from __future__ import annotations

import asyncio
import json

from intake_fixtures import (  # noqa: F401
    WEBHOOK_TOKEN,
    bot_server,
    diagnoses,
    payload,
    top_level,
    until,
)

BEARER = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


async def test_real_alertmanager_fires_then_resolves_one_incident_message(
    bot_server, alertmanager, slack_api, diagnoses
):
    manager = await asyncio.to_thread(
        alertmanager, f"{bot_server.url}/alerts/alertmanager", WEBHOOK_TOKEN
    )
    await asyncio.to_thread(manager.post_alert, "HostOutOfMemory", instance="prod-web-01:9100")
    [message] = await until(lambda: top_level(slack_api), timeout=60)
    assert "HostOutOfMemory on prod-web-01" in message["text"]
    assert "firing" in message["text"]
    [incident] = bot_server.incidents()
    assert (incident["host"], incident["alarm"], incident["source"]) == (
        "prod-web-01",
        "HostOutOfMemory",
        "alertmanager",
    )
    assert diagnoses.calls == [("prod-web-01", incident["id"])]

    await asyncio.to_thread(manager.resolve_alert, "HostOutOfMemory", instance="prod-web-01:9100")
    await until(lambda: top_level(slack_api)[0]["text"].startswith("Resolved"), timeout=60)
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert bot_server.incidents()[0]["state"] == "resolved"
    assert len(bot_server.audit("incident.resolved")) == 1
    assert bot_server.audit("auth.rejected") == []


async def test_one_call_applies_each_alert_of_the_group_by_its_own_status(bot_server, slack_api):
    status, answer = await bot_server.post(
        "/alerts/alertmanager", payload("alertmanager_group.json"), BEARER
    )
    assert status == 200, answer
    results = [(i["host"], i["status"], i["result"]) for i in answer["incidents"]]
    assert results == [
        ("prod-web-01", "firing", "opened"),  # instance label, port stripped
        ("prod-web-02", "resolved", "ignored"),  # a resolve for something never seen
        ("prod-db-01", "firing", "opened"),  # nodename label
    ]
    incidents = {i["host"]: i for i in bot_server.incidents()}
    assert incidents["prod-db-01"]["severity"] == "warning"
    await until(lambda: len(top_level(slack_api)) == 2)
    # Alertmanager repeats the group on every group_interval: repeats count, no new messages.
    await bot_server.post("/alerts/alertmanager", payload("alertmanager_group.json"), BEARER)
    counts = {i["host"]: i["count"] for i in bot_server.incidents()}
    assert counts == {"prod-web-01": 2, "prod-db-01": 2}
    assert len(bot_server.audit("alert.deduplicated")) == 2


async def test_wrong_or_missing_bearer_token_is_401_and_audited(bot_server):
    group = payload("alertmanager_group.json")
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {WEBHOOK_TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        status, answer = await bot_server.post("/alerts/alertmanager", group, headers)
        assert status == 401, answer
    assert bot_server.incidents() == []
    assert len(bot_server.audit("auth.rejected")) == 4
    assert WEBHOOK_TOKEN not in json.dumps(bot_server.audit())


async def test_a_malformed_group_is_refused_whole_with_nothing_half_created(bot_server):
    group = payload("alertmanager_group.json")
    no_host = json.loads(json.dumps(group))
    del no_host["alerts"][2]["labels"]["nodename"]
    bad_status = json.loads(json.dumps(group))
    bad_status["alerts"][1]["status"] = "pending"
    cases = [
        (b"{", "not valid JSON"),
        (json.dumps({"alerts": "none"}).encode(), "'alerts' list"),
        (json.dumps({**group, "version": "3"}).encode(), "version"),
        (json.dumps(no_host).encode(), "alerts[2] (HostOutOfMemory) names no host"),
        (json.dumps(bad_status).encode(), "alerts[1].status"),
    ]
    for body, reason in cases:
        status, answer = await bot_server.post("/alerts/alertmanager", body, BEARER)
        assert status == 400, answer
        assert reason in answer["error"]
    assert bot_server.incidents() == []
    assert bot_server.services.db.query("SELECT * FROM alerts") == []
    assert len(bot_server.audit("input.rejected")) == len(cases)
