"""iam/stabilize-policy.json grants exactly the AWS calls the code makes.

Diagnosis (EC2, Auto Scaling and CloudWatch facts, finding a host by its Name tag), the SNS
intake's instance → host lookup, ``resize-instance``, ``scale-asg`` and the SSM executor run
against moto; the server counts every request it answers. The actions seen must be the
policy's actions, no more (the code would be refused) and no fewer (the policy would grant
something unused), apart from the documented extras below.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from bot.config import Secrets
from bot.sandbox import DEMO_HOST, seed_world
from bot.services import build_services

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "iam" / "stabilize-policy.json"

# Authorised by IAM but never a request of its own: CreateSnapshot with TagSpecifications
# needs ec2:CreateTags on the new snapshot (see docs/deploy.md).
DOCUMENTED_EXTRAS = {"ec2:CreateTags"}
# Request signing names → IAM service prefixes.
PREFIX = {"monitoring": "cloudwatch"}


def policy_actions() -> set[str]:
    found: set[str] = set()
    for statement in json.loads(POLICY.read_text())["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def observed(server: Any) -> set[str]:
    return {
        f"{PREFIX.get(r.service, r.service)}:{r.action}"
        for r in server.requests()
        if r.service and r.action
    }


@pytest.fixture
def world(aws_env: Any) -> Any:
    world = seed_world(lambda s: boto3.client(s, region_name="us-east-1"), "us-east-1")
    # A host outside any group: diagnosis then asks Auto Scaling whether it is a member.
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    lone = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    aws_env.clear_requests()  # seeding is the test's doing, not the bot's
    return SimpleNamespace(**asdict(world), lone_instance_id=lone["Instances"][0]["InstanceId"])


@pytest.fixture
def services(world: Any, tmp_path: Path, settings_factory: Any) -> Any:
    from runbooks.engine import Engine
    from runbooks.model import Timing

    settings = settings_factory(
        hosts={DEMO_HOST: {"instance_id": world.instance_id, "asg": world.asg, "executor": "ssm"}}
    )
    services = build_services(settings, Secrets(), tmp_path / "stabilize.db", slack=False)
    services.engine = Engine(
        Timing(waiter_delay=0.01, poll_interval=0.01, waiter_max_attempts=200, asg_wait=30)
    )
    yield services
    services.close()


async def run_everything(services: Any, world: Any) -> None:
    from bot.facts import HostTarget, gather_facts
    from bot.facts_aws import find_instance_by_name
    from bot.intake import sns
    from runbooks.executors.ssm import SsmExecutor
    from runbooks.model import ExecutionRequest

    host = services.settings.hosts[DEMO_HOST]
    target = HostTarget.from_settings(DEMO_HOST, host, {})
    facts = await gather_facts(services, target)
    assert facts.instance is not None and facts.cpu is not None, facts.errors
    lone = await gather_facts(services, HostTarget("lone-01", instance_id=world.lone_instance_id))
    assert lone.instance is not None and lone.asg is None, lone.errors
    assert await find_instance_by_name(services, DEMO_HOST) is not None
    await sns.host_for_instance(services, world.instance_id)

    engine = services.engine
    for n, (runbook, params) in enumerate(
        [("resize-instance", {"type": "t3.small", "force": "true"}), ("scale-asg", {"by": "1"})]
    ):
        job = ExecutionRequest(f"R-{n:010x}", runbook, DEMO_HOST, params, "U0ALICE")
        result = await engine.execute(services, job)
        assert result.ok, result.error

    ssm = SsmExecutor(services, host, engine.timing)
    ssm.run("uptime", timeout=10)


async def test_policy_is_exactly_the_calls_the_code_makes(
    services: Any, world: Any, aws_env: Any
) -> None:
    await run_everything(services, world)
    made = observed(aws_env)
    granted = policy_actions()
    missing = made - granted
    unused = granted - made - DOCUMENTED_EXTRAS
    assert not missing, f"the code calls these but the policy does not allow them: {missing}"
    assert not unused, f"the policy allows these but the code never calls them: {unused}"


def test_policy_is_least_privilege_in_shape() -> None:
    statements = json.loads(POLICY.read_text())["Statement"]
    for statement in statements:
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, f"wildcard action {action}"
        if statement["Resource"] == "*":
            # Only calls that cannot be scoped to a resource may use "*".
            reads = [actions] if isinstance(actions, str) else actions
            assert all(a.split(":", 1)[1].startswith(("Describe", "Get", "List")) for a in reads), (
                statement["Sid"]
            )
