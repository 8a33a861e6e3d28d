"""add-swap through SSM Run Command when a host says ``executor: ssm``.

moto accepts ``send_command`` and answers ``get_command_invocation`` with an empty success,
but runs nothing: these tests check the calls made (document, instance, exact commands),
not what a real instance would do with them.
"""

from __future__ import annotations

import boto3
import pytest
from runbook_fixtures import FAST, job, make_services

from runbooks import add_swap
from runbooks.engine import execute, format_plan, plan, validate
from runbooks.executors.ssm import SsmExecutor

HOST = "fleet-07"
AMI = "ami-12c6146b"


@pytest.fixture
def instance_id(aws_env) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    out = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.medium")
    return out["Instances"][0]["InstanceId"]


@pytest.fixture
def services(instance_id, settings_factory, tmp_path):
    hosts = {HOST: {"instance_id": instance_id, "executor": "ssm"}}
    svc = make_services(settings_factory(hosts=hosts), tmp_path / "s.db")
    yield svc
    svc.close()


def _sent() -> list[dict]:
    ssm = boto3.client("ssm", region_name="us-east-1")
    return ssm.list_commands()["Commands"]


def test_the_executor_sends_the_exact_command_as_run_shell_script(services, instance_id):
    executor = SsmExecutor(services, services.settings.hosts[HOST], FAST, comment="stabilize R-1")
    params = validate(services, "add-swap", HOST, {"size": "2G", "path": "/swap2"})
    command = add_swap.commands(params)["mkswap"]

    result = executor.run(command, timeout=60)

    assert result.ok  # moto's answer: Success, no output (it ran nothing)
    [sent] = _sent()
    assert sent["DocumentName"] == "AWS-RunShellScript"
    assert sent["InstanceIds"] == [instance_id]
    assert sent["Parameters"]["commands"] == ["mkswap /swap2"]
    assert sent["Parameters"]["executionTimeout"] == ["60"]
    assert sent["Comment"] == "stabilize R-1"


async def test_add_swap_over_ssm_sends_the_preflight_without_sudo(services, aws_env):
    request = job("add-swap", HOST, size="2G", path="/swap2", fstab="/tmp/fstab-test")
    result = await execute(services, request)

    [sent] = _sent()  # the preflight, then the engine stopped: moto gave no facts back
    params = validate(services, "add-swap", HOST, {"size": "2G", "path": "/swap2"})
    expected = add_swap.commands({**params, "fstab": "/tmp/fstab-test"})["preflight"]
    assert sent["Parameters"]["commands"] == [expected]
    assert not expected.startswith("sudo")
    assert request.request_id in sent["Comment"]
    assert result.state == "failed" and result.failed_step == "preflight"
    assert "no answer to the preflight" in result.error
    assert aws_env.count(service="ssm", action="SendCommand") == 1


def test_the_plan_says_it_goes_through_ssm(services, instance_id):
    params = validate(services, "add-swap", HOST, {})
    text = format_plan(plan(services, "add-swap", HOST, params))
    assert f"through SSM Run Command (AWS-RunShellScript) on {instance_id}" in text
    assert "sudo" not in text
    assert "fallocate -l 4294967296 /swapfile" in text
