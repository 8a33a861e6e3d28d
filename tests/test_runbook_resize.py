"""resize-instance against the moto server: validated, snapshotted, resized, audited; a
failure after the stop puts the old type back and the instance running."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from runbook_fixtures import Progress, actions, job, make_services

from bot.errors import InputError
from runbooks.engine import execute, plan, validate

# A moto stock AMI by id: describe_images costs seconds after every reset.
AMI = "ami-12c6146b"
HOST = "prod-web-01"


def _launch(instance_type: str = "t3.medium", tags: list | None = None) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    extra = {"TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]} if tags else {}
    out = ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=instance_type, **extra
    )
    return out["Instances"][0]["InstanceId"]


def _instance(instance_id: str) -> dict:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


@pytest.fixture
def instance_id(aws_env) -> str:
    return _launch()


@pytest.fixture
def services(aws_env, instance_id, settings_factory, tmp_path):
    svc = make_services(
        settings_factory(hosts={HOST: {"instance_id": instance_id}}), tmp_path / "s.db"
    )
    yield svc
    svc.close()


async def test_resize_changes_the_type_after_tagged_snapshots(services, instance_id):
    progress = Progress()
    request = job("resize-instance", HOST, type="t3.large")
    result = await execute(services, request, progress=progress)

    assert result.ok, result.error
    instance = _instance(instance_id)
    assert instance["InstanceType"] == "t3.large"
    assert instance["State"]["Name"] == "running"

    ec2 = boto3.client("ec2", region_name="us-east-1")
    snaps = ec2.describe_snapshots(
        Filters=[{"Name": "tag:stabilize:request_id", "Values": [request.request_id]}]
    )["Snapshots"]
    volumes = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    assert sorted(s["VolumeId"] for s in snaps) == sorted(volumes)
    assert all(s["State"] == "completed" for s in snaps)

    assert [s.name for s in result.steps] == [
        "inspect",
        "snapshot",
        "protect",
        "stop",
        "modify",
        "start",
        "status",
        "release",
        "verify",
    ]
    trail = services.audit.list(request_id=request.request_id)
    assert [r["action"] for r in trail] == [
        "execution.started",
        *["execution.step"] * 9,
        "execution.succeeded",
    ]
    assert all(r["actor"] == "system" and r["host"] == HOST for r in trail)
    assert "t3.large" in result.summary
    assert services.audit.verify().ok


async def test_a_failure_after_the_stop_rolls_back_to_the_old_type_running(services, instance_id):
    ec2 = services.aws("ec2")

    def refuse_new_type(params, **_):
        # A real botocore hook on the engine's own client: the API refuses the change.
        if params.get("InstanceType", {}).get("Value") == "t3.large":
            raise ClientError(
                {"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no capacity"}},
                "ModifyInstanceAttribute",
            )

    ec2.meta.events.register("provide-client-params.ec2.ModifyInstanceAttribute", refuse_new_type)
    request = job("resize-instance", HOST, type="t3.large")
    result = await execute(services, request)

    assert result.state == "rolled_back"
    assert result.failed_step == "modify"
    assert "InsufficientInstanceCapacity" in result.error
    instance = _instance(instance_id)
    assert instance["InstanceType"] == "t3.medium"
    assert instance["State"]["Name"] == "running"
    assert actions(services, request.request_id)[-1] == "execution.rolled_back"
    assert "back to t3.medium and running" in result.summary


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "t3.nano"}, "smaller than t3.medium"),
        ({"type": "t3.huge"}, "no such instance type"),
        ({"type": "t4g.large"}, "same architecture"),
        ({"type": "t3.medium"}, "already t3.medium"),
        ({}, "needs type="),
        ({"type": "t3.large", "colour": "red"}, "no parameter 'colour'"),
    ],
)
def test_bad_types_are_refused_before_anything_runs(services, aws_env, raw, message):
    with pytest.raises(InputError, match=message):
        validate(services, "resize-instance", HOST, raw)
    assert aws_env.count(action="StopInstances") == 0


def test_downsize_needs_allow_downsize(services):
    params = validate(
        services, "resize-instance", HOST, {"type": "t3.small", "allow_downsize": "true"}
    )
    assert params == {"type": "t3.small", "allow_downsize": True, "force": False}


def test_asg_members_are_refused_unless_forced(aws_env, settings_factory, tmp_path):
    member = _launch(tags=[{"Key": "aws:autoscaling:groupName", "Value": "web-asg"}])
    svc = make_services(settings_factory(hosts={HOST: {"instance_id": member}}), tmp_path / "s.db")
    with pytest.raises(InputError, match="Auto Scaling Group web-asg.*force=true"):
        validate(svc, "resize-instance", HOST, {"type": "t3.large"})
    assert validate(svc, "resize-instance", HOST, {"type": "t3.large", "force": "true"})["force"]
    svc.close()


async def test_a_forced_asg_member_is_protected_from_replacement_while_stopped(
    aws_env, settings_factory, tmp_path
):
    """The group must not replace a member it sees stopped: the run suspends HealthCheck and
    ReplaceUnhealthy around the stop and resumes only what it suspended itself."""
    autoscaling = boto3.client("autoscaling", region_name="us-east-1")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="web-lc", ImageId=AMI, InstanceType="t3.medium"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchConfigurationName="web-lc",
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    member = _launch()
    autoscaling.attach_instances(InstanceIds=[member], AutoScalingGroupName="web-asg")
    # An operator had already suspended HealthCheck: it must stay suspended afterwards.
    autoscaling.suspend_processes(AutoScalingGroupName="web-asg", ScalingProcesses=["HealthCheck"])
    svc = make_services(settings_factory(hosts={HOST: {"instance_id": member}}), tmp_path / "s.db")
    aws_env.clear_requests()
    try:
        result = await execute(svc, job("resize-instance", HOST, type="t3.large", force="true"))
    finally:
        svc.close()

    assert result.ok, result.error
    assert _instance(member)["InstanceType"] == "t3.large"
    outputs = {s.name: s.output for s in result.steps}
    assert "suspended ReplaceUnhealthy" in outputs["protect"]
    assert "HealthCheck already suspended" in outputs["protect"]
    assert outputs["release"] == "web-asg: resumed ReplaceUnhealthy"
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])
    suspended = {p["ProcessName"] for p in group["AutoScalingGroups"][0]["SuspendedProcesses"]}
    assert suspended == {"HealthCheck"}
    assert aws_env.count(action="SuspendProcesses") == 1
    assert aws_env.count(action="ResumeProcesses") == 1


def test_the_plan_names_every_call_and_touches_nothing(services, aws_env, instance_id):
    params = validate(services, "resize-instance", HOST, {"type": "t3.large"})
    aws_env.clear_requests()
    steps = plan(services, "resize-instance", HOST, params)
    text = "\n".join(s.text for s in steps)
    assert f"ec2.stop_instances(InstanceIds=['{instance_id}'])" in text
    assert "InstanceType={'Value': 't3.large'}" in text
    assert "instance_status_ok" in text
    assert aws_env.count() == 0


async def test_failed_status_checks_after_the_start_roll_back_to_the_old_type(
    services, instance_id, aws_env
):
    ec2 = services.aws("ec2")

    def impaired(params, **_):
        raise ClientError(
            {"Error": {"Code": "Unavailable", "Message": "status checks impaired"}},
            "DescribeInstanceStatus",
        )

    ec2.meta.events.register("provide-client-params.ec2.DescribeInstanceStatus", impaired)
    result = await execute(services, job("resize-instance", HOST, type="t3.large"))

    assert result.state == "rolled_back" and result.failed_step == "status"
    instance = _instance(instance_id)
    assert (instance["InstanceType"], instance["State"]["Name"]) == ("t3.medium", "running")
    assert aws_env.count(action="StopInstances") == 2  # the resize, then the rollback
