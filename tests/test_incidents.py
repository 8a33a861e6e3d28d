# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Incidents: grouping, resolve and re-open, messages kept up to date across restarts, and
the diagnosis of a new incident in its thread."""

from __future__ import annotations

import json
import sqlite3

import pytest
from diagnosis_fixtures import make_world
from intake_fixtures import services, start_bot, top_level, until  # noqa: F401

from bot.config import Secrets
from bot.incidents import accept, sync_incident_messages
from bot.intake.model import Alert
from bot.services import build_services


def alert(host="prod-web-01", name="HostOutOfMemory", status="firing", severity="warning", n=0):
    return Alert("alertmanager", host, name, status, severity, summary=f"#{n}")


def test_one_call_opens_repeats_resolves_and_reopens_in_order(services):
    outcomes = accept(
        services,
        [
            alert(n=1),
            alert(n=2, severity="critical"),
            alert(n=3, status="resolved"),
            alert(n=4, status="resolved"),
            alert(n=5),
            alert(host="prod-db-01", n=6),
        ],
    )
    assert [(o.result, o.incident_id) for o in outcomes] == [
        ("opened", 1),
        ("deduplicated", 1),
        ("resolved", 1),
        ("deduplicated", 1),
        ("opened", 2),
        ("opened", 3),
    ]
    rows = services.db.query("SELECT id, host, state, count, severity FROM incidents")
    assert rows == [
        {"id": 1, "host": "prod-web-01", "state": "resolved", "count": 2, "severity": "critical"},
        {"id": 2, "host": "prod-web-01", "state": "open", "count": 1, "severity": "warning"},
        {"id": 3, "host": "prod-db-01", "state": "open", "count": 1, "severity": "warning"},
    ]
    actions = [(e["action"], e["incident_id"]) for e in services.audit.list()]
    assert actions == [
        ("alert.received", "1"),
        ("incident.opened", "1"),
        ("alert.deduplicated", "1"),
        ("alert.received", "1"),
        ("incident.resolved", "1"),
        ("alert.deduplicated", "1"),
        ("alert.received", "2"),
        ("incident.opened", "2"),
        ("alert.received", "3"),
        ("incident.opened", "3"),
    ]
    assert services.audit.verify().ok
    # Incident 1 was opened and resolved within the call: it is posted once, already resolved.
    queued = services.db.query("SELECT op, key, text FROM outbox WHERE state = 'pending'")
    assert [(q["op"], q["key"]) for q in queued] == [
        ("post", "incident:1"),
        ("post", "incident:2"),
        ("post", "incident:3"),
    ]
    assert queued[0]["text"].startswith("Resolved: INC-1")


def test_the_database_allows_one_open_incident_per_host_and_alarm(services):
    accept(services, [alert()])
    with pytest.raises(sqlite3.IntegrityError):
        services.db.conn.execute(
            "INSERT INTO incidents (host, alarm, source, severity, first_seen, last_seen)"
            " VALUES ('prod-web-01', 'HostOutOfMemory', 'agent', 'info', 'x', 'x')"
        )


def test_a_lagging_message_is_refreshed_after_a_restart(services, settings_factory, tmp_path):
    accept(services, [alert(n=1)])
    accept(services, [alert(n=n) for n in range(2, 6)])  # repeats: the message is now stale
    services.close()
    again = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    try:
        assert sync_incident_messages(again) == 1
        assert sync_incident_messages(again) == 0
        # Not posted yet, so the refresh rewrote the queued post: it goes out with the count.
        [queued] = again.db.query("SELECT * FROM outbox WHERE state = 'pending'")
        assert queued["op"] == "post" and "5 alerts" in queued["text"]
    finally:
        again.close()


async def test_the_diagnosis_of_a_new_incident_lands_in_its_thread(
    aws_env, slack_api, settings_factory, tmp_path, agent_signer
):
    iid = make_world()
    settings = settings_factory(hosts={"prod-web-01": {"instance_id": iid}})
    server, runner = await start_bot(tmp_path, slack_api, settings, post_interval=0.1)
    try:
        body, headers = agent_signer.sign(agent_signer.alert(host="prod-web-01"))
        status, _ = await server.post("/alerts/agent", body, headers)
        assert status == 200
        [incident] = await until(lambda: top_level(slack_api))

        def diagnosis():
            return [
                m
                for m in slack_api.messages("C0ALERTS")
                if m.get("thread_ts") == incident["ts"] and m["ts"] != incident["ts"]
            ]

        [reply] = await until(diagnosis, timeout=60)
        assert "Diagnosis: prod-web-01" in json.dumps(reply["blocks"])
        [posted] = server.audit("diagnosis.posted")
        assert posted["incident_id"] == "1" and posted["actor"] == "system"
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()


async def test_a_diagnosis_that_cannot_run_leaves_a_note_in_the_thread(
    aws_env, slack_api, settings_factory, tmp_path, agent_signer
):
    server, runner = await start_bot(tmp_path, slack_api, settings_factory(), post_interval=0.1)
    try:
        body, headers = agent_signer.sign(agent_signer.alert(host="ghost-01"))
        status, _ = await server.post("/alerts/agent", body, headers)
        assert status == 200
        [incident] = await until(lambda: top_level(slack_api))
        notes = await until(
            lambda: [m for m in slack_api.messages("C0ALERTS") if m["ts"] != incident["ts"]],
            timeout=60,
        )
        assert notes[0]["thread_ts"] == incident["ts"]
        assert notes[0]["text"].startswith("Automatic diagnosis of ghost-01 did not run:")
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()
