"""AWS facts against the moto server: an instance with a type, CPU and CloudWatch-agent
metrics put with put_metric_data, an Auto Scaling Group; lookups by Name tag; AWS failures
that degrade to a named error."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError
from diagnosis_fixtures import make_services, make_world
from helpers import free_port

from bot.diagnosis import diagnose, resolve_host
from bot.errors import InputError
from bot.facts_aws import explain


@pytest.fixture
def services_for(settings_factory, tmp_path):
    made = []

    def build(hosts):
        services = make_services(
            settings_factory(hosts=hosts, ssh={"connect_timeout": "2s"}), tmp_path
        )
        made.append(services)
        return services

    yield build
    for s in made:
        s.close()


async def test_instance_type_metrics_and_asg_from_aws(aws_env, services_for):
    iid = make_world()
    services = services_for({"prod-web-01": {"instance_id": iid}})
    d = await diagnose(services, "prod-web-01")
    f = d.facts
    assert f.aws_status == "ok", d.errors
    assert f.instance is not None
    assert (f.instance.type, f.instance.state, f.instance.architecture) == (
        "t3.micro",
        "running",
        "x86_64",
    )
    assert (f.instance.vcpus, f.instance.memory_mib, f.instance.credit_mode) == (
        2,
        1024,
        "standard",
    )
    assert f.cpu is not None and round(f.cpu.average) == 95 and len(f.cpu.datapoints) >= 3
    assert f.cwagent is not None and round(f.cwagent["mem_used_percent"].average) == 97
    assert f.asg is not None
    assert (f.asg.name, f.asg.max_size, f.asg.in_service) == ("web-asg", 4, 1)
    assert [t.name for t in f.family_types or []][:3] == ["t3.nano", "t3.micro", "t3.small"]
    # No SSH settings: named, and the diagnosis comes from AWS alone.
    assert any("no SSH settings for host 'prod-web-01'" in e for e in d.errors)
    runbooks = {r.runbook: r.params for r in d.recommendations}
    assert runbooks["scale-asg"] == {"by": "1"}
    assert runbooks["resize-instance"]["type"].startswith("t3.")
    assert any(f.title.startswith("Memory pressure: 97 % used") for f in d.findings)
    assert d.to_dict()["facts"]["instance"]["type"] == "t3.micro"


async def test_ssh_timeout_with_aws_facts_recommends_resize_in_time(aws_env, services_for):
    import socket

    iid = make_world(cpu=99.0, mem=None)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts TCP (the kernel does), never speaks SSH
    try:
        port = silent.getsockname()[1]
        services = services_for(
            {"prod-web-01": {"instance_id": iid, "ssh": {"host": "127.0.0.1", "port": port}}}
        )
        started = time.monotonic()
        d = await diagnose(services, "prod-web-01")
        assert time.monotonic() - started < 2.0 + 2
    finally:
        silent.close()
    assert d.findings[0].title.startswith("SSH timed out")
    resize = [r for r in d.recommendations if r.runbook == "resize-instance"]
    # The instance is in web-asg: the resize is forced, and the reason says what that means.
    assert resize and resize[0].params == {"type": "t3.small", "force": "true"}
    assert "member of web-asg" in resize[0].reason
    assert "needs no SSH" in resize[0].reason


async def test_a_host_missing_from_the_inventory_is_found_by_its_name_tag(aws_env, services_for):
    iid = make_world()
    services = services_for({})
    target = await resolve_host(services, "prod-web-01")
    assert (target.instance_id, target.source, target.ssh) == (iid, "ec2", None)


async def test_unknown_host_is_one_clear_line(aws_env, services_for):
    services = services_for({})
    with pytest.raises(InputError) as caught:
        await resolve_host(services, "ghost-01")
    assert str(caught.value) == (
        "unknown host 'ghost-01': not in the inventory (hosts: in stabilize.yaml)"
        " and no EC2 instance is tagged Name=ghost-01"
    )


async def test_unreachable_aws_degrades_to_ssh_facts_with_a_note(sshd, services_for, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    host = {**sshd.host_config(), "instance_id": "i-0123456789abcdef0"}
    services = services_for({"web-01": host})
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "ok"
    assert d.facts.memory is not None
    assert d.facts.aws_status == "error"
    assert any("aws: cannot reach the ec2 API" in e for e in d.errors), d.errors


def test_denied_permissions_name_the_iam_action_to_grant():
    denied = ClientError(
        {"Error": {"Code": "UnauthorizedOperation", "Message": "You are not authorized"}},
        "DescribeInstanceTypes",
    )
    assert explain("ec2", "describe_instance_types", denied) == (
        "aws: ec2:DescribeInstanceTypes denied (UnauthorizedOperation);"
        " grant it to the bot's IAM role"
    )


async def test_a_denied_permission_costs_only_its_facts(aws_env, services_for, monkeypatch):
    """A real IAM denial: moto enforces a policy that allows EC2 and Auto Scaling reads but
    not CloudWatch. The diagnosis keeps the instance facts and names the missing grant."""
    import json

    from diagnosis_fixtures import aws_client
    from moto import settings as moto_settings

    iid = make_world()
    iam = aws_client("iam")
    iam.create_user(UserName="stabilize-bot")
    iam.put_user_policy(
        UserName="stabilize-bot",
        PolicyName="no-cloudwatch",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["ec2:Describe*", "autoscaling:Describe*"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="stabilize-bot")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    services = services_for({"prod-web-01": {"instance_id": iid}})
    d = await diagnose(services, "prod-web-01")
    assert d.facts.instance is not None and d.facts.instance.memory_mib == 1024
    assert d.facts.asg is not None and d.facts.asg.name == "web-asg"
    assert d.facts.cpu is None and d.facts.aws_status == "partial"
    assert (
        "aws: cloudwatch:GetMetricStatistics denied (AccessDenied);"
        " grant it to the bot's IAM role" in d.errors
    ), "\n".join(d.errors)
    assert len(d.errors) == len(set(d.errors))
    assert all("\n" not in e for e in d.errors)


def test_known_host_is_the_inventory_only_and_asks_nobody(aws_env, services_for):
    from bot.diagnosis import known_host

    services = services_for({"prod-web-01": {"instance_id": "i-0123456789abcdef0"}})
    assert known_host(services, "prod-web-01")
    assert not known_host(services, "prod-web-02")
    assert not known_host(services, "bad name;rm -rf /")
    assert aws_env.count() == 0


async def test_an_ssm_host_without_ssh_gets_its_facts_through_run_command(aws_env, services_for):
    """moto accepts the command but runs nothing (its output is empty): the diagnosis says
    the SSM output was unusable and still stands on the AWS facts."""
    iid = make_world()
    services = services_for({"prod-web-01": {"instance_id": iid, "executor": "ssm"}})
    d = await diagnose(services, "prod-web-01")
    assert d.facts.source == f"ssm {iid}"
    assert aws_env.count(action="SendCommand") == 1
    assert aws_env.count(action="GetCommandInvocation") >= 1
    assert any(e.startswith("ssm: the command printed nothing usable") for e in d.errors)
    assert not any("no SSH settings" in e for e in d.errors)
    assert d.facts.instance is not None and d.facts.instance.type == "t3.micro"
