"""The real engine behind the Slack surface: approve click → resize against moto → progress
in the request's thread → the message says the outcome → the audit trail is in order.
And in a dry run, the click only posts the plan."""

from __future__ import annotations

import boto3
import pytest
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
    out = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.medium")
    return out["Instances"][0]["InstanceId"]


def _type(instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "InstanceType"
    ]


async def test_approved_resize_runs_reports_in_the_thread_and_updates_the_message(
    slack_bot, instance_id, aws_env
):
    bot = await slack_bot(engine=Engine(timing=FAST), hosts={HOST: {"instance_id": instance_id}})
    request = await bot.ask(f"run resize-instance {HOST} type=t3.large", user="U0CAROL")
    assert "stop_instances" in request.plan  # the plan is on the approval request
    assert aws_env.count(action="StopInstances") == 0

    await bot.click("approve_request", request.id, user="U0ALICE")
    await bot.settle()

    assert _type(instance_id) == "t3.large"
    thread = bot.thread(request.id)
    assert any("▶ 4/9 stop…" in line for line in thread)
    assert any("✓ 9/9 verify" in line for line in thread)
    assert "Succeeded: resize-instance on prod-web-01" in thread[-1]
    final = bot.message(request.id)
    assert "Succeeded (approved by <@U0ALICE>)" in text_of(final)
    assert buttons(final) == []
    assert approvals.get_request(bot.services, request.id).state == "succeeded"

    trail = [r["action"] for r in bot.services.audit.list(request_id=request.id)]
    assert trail == [
        "request.created",
        "request.approved",
        "execution.started",
        *["execution.step"] * 9,
        "execution.succeeded",
    ]
    started = bot.services.audit.list(request_id=request.id, action="execution.started")[0]
    assert "approved by U0ALICE" in started["detail"]
    assert bot.services.audit.verify().ok


async def test_in_a_dry_run_the_click_only_posts_the_plan(slack_bot, instance_id, aws_env):
    bot = await slack_bot(
        engine=Engine(timing=FAST), dry_run=True, hosts={HOST: {"instance_id": instance_id}}
    )
    request = await bot.ask(f"run resize-instance {HOST} type=t3.large", user="U0CAROL")
    await bot.click("approve_request", request.id, user="U0BOB")
    await bot.settle()

    assert _type(instance_id) == "t3.medium"
    assert aws_env.count(action="StopInstances") == 0
    thread = "\n".join(bot.thread(request.id))
    assert "Dry run" in thread and "modify_instance_attribute" in thread
    assert "dry run" in text_of(bot.message(request.id)).lower()
