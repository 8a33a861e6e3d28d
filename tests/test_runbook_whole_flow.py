"""The whole loop in one test, every part real: a signed agent alert → incident message →
diagnosis (SSH refused, AWS facts from moto) with a resize button → request → approve click
→ resize-instance against moto → verified → request message updated → audit trail in order.
"""

from __future__ import annotations

import asyncio
import dataclasses

import boto3
import pytest
from helpers import free_port
from runbook_fixtures import FAST
from slack_fixtures import (
    buttons,
    slack_bot_fixture,  # noqa: F401  (provides `slack_bot`)
    text_of,
)

from bot import approvals
from runbooks.engine import Engine

HOST = "prod-web-01"
AMI = "ami-12c6146b"


@pytest.fixture
def instance_id(aws_env) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    out = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.medium",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": HOST}]}],
    )
    return out["Instances"][0]["InstanceId"]


def _type(instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found["InstanceType"]


async def test_alert_to_verified_resize_with_the_audit_trail_in_order(
    slack_bot, agent_signer, instance_id, aws_env
):
    closed = free_port()  # nothing listens: SSH is refused, as on a host whose sshd died
    bot = await slack_bot(
        engine=Engine(timing=FAST),
        hosts={HOST: {"ssh": {"host": "127.0.0.1", "port": closed}, "instance_id": instance_id}},
        ssh={"connect_timeout": "3s"},
    )
    bot.services.secrets = dataclasses.replace(
        bot.services.secrets, webhook_token=agent_signer.token
    )

    # 1. the alert
    body, headers = agent_signer.sign(agent_signer.alert(host=HOST, kind="service_down"))
    resp = await bot.client.post("/alerts/agent", data=body, headers=headers)
    assert resp.status == 200, await resp.text()

    # 2. the diagnosis lands in the incident's thread with a resize button
    def recommendation():
        for message in bot.api.messages("C0ALERTS"):
            for b in buttons(message):
                if b["action_id"].startswith("recommend_") and "resize" in text_of(message):
                    return b
        return None

    async def delivered():
        while not recommendation():
            await bot.services.outbox.drain(5)
            await asyncio.sleep(0.05)

    await asyncio.wait_for(delivered(), timeout=60)
    button = recommendation()

    # 3. somebody asks for it; 4. an approver approves
    await bot.click(button["action_id"], button["value"], user="U0CAROL")
    await bot.settle()
    [request] = approvals.list_requests(bot.services)
    assert (request.runbook, request.host, request.params["type"]) == (
        "resize-instance",
        HOST,
        "t3.large",
    )
    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()

    # 5. the runbook ran and was verified; the request message says so
    assert _type(instance_id) == "t3.large"
    final = bot.message(request.id)
    assert "Succeeded (approved by <@U0ALICE>)" in text_of(final)
    assert buttons(final) == []
    thread = bot.thread(request.id)
    assert any("✓ 9/9 verify" in line and "t3.large and running" in line for line in thread)

    # 6. the audit trail tells the story in order, and the chain is intact
    story = [
        r["action"]
        for r in bot.services.audit.list()
        if r["action"] != "execution.step" and r["action"] != "alert.deduplicated"
    ]
    expected = [
        "alert.received",
        "incident.opened",
        "diagnosis.posted",
        "request.created",
        "request.approved",
        "execution.started",
        "execution.succeeded",
    ]
    assert [a for a in story if a in expected] == expected
    assert bot.services.audit.verify().ok
