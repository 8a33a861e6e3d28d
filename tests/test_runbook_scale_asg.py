"""scale-asg against the moto server: desired capacity reached with InService instances;
beyond MaxSize refused with how to raise it."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from runbook_fixtures import actions, job, make_services

from bot.errors import InputError
from runbooks.engine import execute, plan, validate

# A moto stock AMI by id: describe_images costs seconds after every reset.
AMI = "ami-12c6146b"
HOST = "web-fleet"


@pytest.fixture
def asg(aws_env) -> str:
    auto = boto3.client("autoscaling", region_name="us-east-1")
    auto.create_launch_configuration(
        LaunchConfigurationName="web-lc", ImageId=AMI, InstanceType="t3.micro"
    )
    auto.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchConfigurationName="web-lc",
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    return "web-asg"


@pytest.fixture
def services(asg, settings_factory, tmp_path):
    hosts = {HOST: {"ssh": {"host": "127.0.0.1"}, "asg": asg}}
    svc = make_services(settings_factory(hosts=hosts), tmp_path / "s.db")
    yield svc
    svc.close()


def _group() -> dict:
    auto = boto3.client("autoscaling", region_name="us-east-1")
    return auto.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])[
        "AutoScalingGroups"
    ][0]


async def test_scale_to_desired_reaches_that_many_in_service(services):
    request = job("scale-asg", HOST, desired=3)
    result = await execute(services, request)

    assert result.ok, result.error
    group = _group()
    assert group["DesiredCapacity"] == 3
    assert sum(i["LifecycleState"] == "InService" for i in group["Instances"]) == 3
    assert [s.name for s in result.steps] == ["inspect", "scale", "wait", "verify"]
    assert "3 InService" in result.summary
    assert actions(services, request.request_id)[-1] == "execution.succeeded"


async def test_scale_by_adds_to_the_current_capacity(services):
    result = await execute(services, job("scale-asg", HOST, by="+2"))
    assert result.ok, result.error
    assert _group()["DesiredCapacity"] == 3


def test_beyond_max_size_is_refused_with_how_to_raise_it(services, aws_env):
    with pytest.raises(InputError) as caught:
        validate(services, "scale-asg", HOST, {"desired": "9"})
    message = str(caught.value)
    assert "MaxSize 4" in message
    assert "aws autoscaling update-auto-scaling-group --auto-scaling-group-name web-asg" in message
    assert "--max-size 9" in message
    with pytest.raises(InputError, match="MaxSize"):
        validate(services, "scale-asg", HOST, {"by": "+5"})
    assert aws_env.count(action="SetDesiredCapacity") == 0
    assert _group()["DesiredCapacity"] == 1


async def test_a_refused_run_changes_nothing_and_says_why(services):
    result = await execute(services, job("scale-asg", HOST, desired=9))
    assert result.state == "refused"
    assert "MaxSize" in result.error
    assert _group()["DesiredCapacity"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"desired": "-1"}, "out of bounds"),
        ({"desired": "2", "by": "1"}, "not both"),
        ({}, "either desired=N or by=\\+N"),
        ({"by": "0"}, "changes nothing"),
        ({"desired": "lots"}, "not a whole number"),
    ],
)
def test_bad_capacities_are_refused(services, raw, message):
    with pytest.raises(InputError, match=message):
        validate(services, "scale-asg", HOST, raw)


def test_plan_shows_the_call(services):
    steps = plan(services, "scale-asg", HOST, {"desired": "2"})
    text = "\n".join(s.text for s in steps)
    assert "set_desired_capacity(AutoScalingGroupName='web-asg', DesiredCapacity=2" in text


async def test_a_failure_while_waiting_puts_the_old_capacity_back(services):
    auto = services.aws("autoscaling")
    scaled = []

    def note(params, **_):
        scaled.append(params["DesiredCapacity"])

    def unreachable(params, **_):
        if scaled:  # the group was scaled: now the API stops answering
            raise ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}},
                "DescribeAutoScalingGroups",
            )

    auto.meta.events.register("provide-client-params.autoscaling.SetDesiredCapacity", note)
    auto.meta.events.register(
        "provide-client-params.autoscaling.DescribeAutoScalingGroups", unreachable
    )
    result = await execute(services, job("scale-asg", HOST, desired=3))

    assert result.state == "rolled_back" and result.failed_step == "wait"
    assert "ServiceUnavailable" in result.error
    assert scaled == [3, 1]
    assert _group()["DesiredCapacity"] == 1
