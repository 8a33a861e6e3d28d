"""The demo's embedded AWS: moto on 127.0.0.1, seeded with the demo world.

``Sandbox`` starts moto's ``ThreadedMotoServer`` on a free loopback port and points *this
process* at it (``AWS_ENDPOINT_URL`` and fake credentials, restored on ``stop``), so the real
boto3 code paths of diagnosis and the runbooks run against it and nothing reaches a real cloud.
``seed`` creates the demo world: ``prod-web-01`` (t3.micro, tag ``Name``) in the Auto Scaling
Group ``web-asg``, CPU metrics shaped like a 9 a.m. spike, a CloudWatch alarm and an SNS topic.

The other half of the alarm path, the local SNS signer, is ``bot.sandbox_sns.SnsSigner``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bot.errors import StabilizeError

LOOPBACK = "127.0.0.1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEMO_HOST = "prod-web-01"
DEMO_ASG = "web-asg"
DEMO_TYPE = "t3.micro"
DEMO_TOPIC = "stabilize-alarms"
DEMO_ALARM = "prod-web-01-cpu-high"
INSTALL_HINT = "pip install -e '.[demo]'"

# Only inside the demo process: never a real profile, credential file or metadata service.
_SANDBOX_ENV = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN")


class SandboxError(StabilizeError):
    """The sandbox cannot start; the message says how to fix it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def moto_missing() -> str | None:
    """None when moto's server is importable, else a one-line hint."""
    try:
        import moto.moto_server.threaded_moto_server  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError:
        return f"the demo needs the 'demo' extra (moto): {INSTALL_HINT} (or ./run demo)"
    return None


@dataclass(frozen=True)
class SeededWorld:
    instance_id: str
    instance_type: str
    asg: str
    topic_arn: str
    alarm_name: str
    alarm_arn: str
    region: str


class Sandbox:
    """moto on 127.0.0.1:<free port>, with this process's AWS environment pointed at it."""

    def __init__(self, *, region: str = "us-east-1", port: int | None = None) -> None:
        self.region = region
        self.port = port
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.world: SeededWorld | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Sandbox:
        hint = moto_missing()
        if hint:
            raise SandboxError(hint)
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        # werkzeug would print a line per AWS call over the demo's screen.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = self.port or free_port()
        server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise SandboxError(
                f"cannot listen on {LOOPBACK}:{self.port} for the AWS sandbox ({exc.strerror});"
                " free the port or run the demo again"
            ) from None
        self._server = server
        self._point_env_here()
        return self

    def _point_env_here(self) -> None:
        wanted: dict[str, str | None] = {
            **_SANDBOX_ENV,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
        wanted.update({name: None for name in _CLEARED_ENV})
        for name, value in wanted.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def stop(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.region).client(service, endpoint_url=self.url)

    # -- the demo world ---------------------------------------------------------------------

    def seed(self, *, now: dt.datetime | None = None) -> SeededWorld:
        """Create prod-web-01 in web-asg, its CPU spike, the alarm and the SNS topic."""
        self.world = seed_world(self.client, self.region, now=now)
        return self.world

    def instance_type(self, instance_id: str) -> str:
        found = self.client("ec2").describe_instances(InstanceIds=[instance_id])
        return str(found["Reservations"][0]["Instances"][0]["InstanceType"])

    def desired_capacity(self) -> int:
        groups = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[DEMO_ASG]
        )["AutoScalingGroups"]
        return int(groups[0]["DesiredCapacity"])

    def alarm_message(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The JSON CloudWatch puts in the SNS ``Message`` when the alarm fires."""
        if self.world is None:
            raise SandboxError("seed the sandbox before raising its alarm")
        return cloudwatch_alarm(self.world, now=now)


def seed_world(
    client: Callable[[str], Any], region: str, *, now: dt.datetime | None = None
) -> SeededWorld:
    """The demo world, created through ``client(service)`` (any moto endpoint will do)."""
    ec2 = client("ec2")
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name_tag = {"Key": "Name", "Value": DEMO_HOST}
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType=DEMO_TYPE,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [name_tag]}],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]

    asg = client("autoscaling")
    asg.create_launch_configuration(
        LaunchConfigurationName=f"{DEMO_ASG}-lc", ImageId=image_id, InstanceType=DEMO_TYPE
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=DEMO_ASG,
        LaunchConfigurationName=f"{DEMO_ASG}-lc",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=[f"{region}a"],
    )
    # Attaching raises the desired capacity to 1: prod-web-01 is the group's one instance.
    asg.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=DEMO_ASG)

    topic_arn = client("sns").create_topic(Name=DEMO_TOPIC)["TopicArn"]
    cloudwatch = client("cloudwatch")
    for chunk in _chunks(list(cpu_spike(instance_id, now=now)), 20):
        cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=chunk)
    cloudwatch.put_metric_alarm(
        AlarmName=DEMO_ALARM,
        AlarmDescription=f"CPU above 90% on {DEMO_HOST}",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        Period=300,
        EvaluationPeriods=1,
        Threshold=90.0,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[topic_arn],
    )
    return SeededWorld(
        instance_id=instance_id,
        instance_type=DEMO_TYPE,
        asg=DEMO_ASG,
        topic_arn=topic_arn,
        alarm_name=DEMO_ALARM,
        alarm_arn=f"arn:aws:cloudwatch:{region}:{ACCOUNT_ID}:alarm:{DEMO_ALARM}",
        region=region,
    )


def cpu_spike(instance_id: str, *, now: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    """Two hours of 5-minute CPU averages: a quiet morning, then the 9 a.m. rush pinning the
    CPU in the last half hour (the seed's shape, shifted so it ends now)."""
    end = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
    points = 24
    for i in range(points):
        minutes_ago = (points - 1 - i) * 5
        if minutes_ago > 35:
            value = 14.0 + (i * 7) % 9  # idle hum
        elif minutes_ago > 20:
            value = 55.0 + (35 - minutes_ago) * 2.5  # the rush begins
        else:
            value = 94.0 + (i % 3) * 1.7  # pinned
        yield {
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": end - dt.timedelta(minutes=minutes_ago),
            "Value": value,
            "Unit": "Percent",
        }


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cloudwatch_alarm(world: SeededWorld, *, now: dt.datetime | None = None) -> dict[str, Any]:
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"
    return {
        "AlarmName": world.alarm_name,
        "AlarmDescription": f"CPU above 90% on {DEMO_HOST}",
        "AWSAccountId": ACCOUNT_ID,
        "AlarmConfigurationUpdatedTimestamp": stamp,
        "NewStateValue": "ALARM",
        "NewStateReason": (
            "Threshold Crossed: 1 out of the last 1 datapoints [97.4] was greater than the"
            " threshold (90.0) (minimum 1 datapoint for OK -> ALARM transition)."
        ),
        "StateChangeTime": stamp,
        "Region": "US East (N. Virginia)",
        "AlarmArn": world.alarm_arn,
        "OldStateValue": "OK",
        "OKActions": [],
        "AlarmActions": [world.topic_arn],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "CPUUtilization",
            "Namespace": "AWS/EC2",
            "StatisticType": "Statistic",
            "Statistic": "AVERAGE",
            "Unit": None,
            "Dimensions": [{"value": world.instance_id, "name": "InstanceId"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 90.0,
            "TreatMissingData": "missing",
            "EvaluateLowSampleCountPercentile": "",
        },
    }


def alarm_subject(world: SeededWorld) -> str:
    return f'ALARM: "{world.alarm_name}" in US East (N. Virginia)'
