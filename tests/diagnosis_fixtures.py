"""Fact sets and command outputs for the diagnosis tests (tests/payloads/diagnosis/)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3

from bot.facts import (
    AutoScalingGroup,
    Disk,
    Facts,
    Instance,
    InstanceType,
    Load,
    Memory,
    MetricStats,
    OomKill,
    Process,
    Swap,
)

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "diagnosis"


def output(name: str) -> str:
    """A recorded command output, e.g. ``output("journal_oom")``."""
    return (PAYLOADS / f"output_{name}.txt").read_text()


def facts(name: str, host: str = "prod-web-01") -> Facts:
    """A fact set from ``facts_<name>.json`` (see the ``_about`` key of each file)."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"facts_{name}.json").read_text())
    f = Facts(host=host, source="fixture", ssh_status=data.get("ssh_status", "ok"))
    if "memory" in data:
        f.memory = Memory(**data["memory"])
    if "swap" in data:
        f.swap = Swap(**data["swap"])
    if "load" in data:
        f.load = Load(*data["load"])
    f.cpus = data.get("cpus")
    if "processes" in data:
        f.processes = sorted(
            (Process(*p) for p in data["processes"]), key=lambda p: (-p.rss_kib, p.pid)
        )
    if "oom_kills" in data:
        f.oom_kills = [OomKill(**k) for k in data["oom_kills"]]
        f.kernel_log = "journalctl"
    if "disk_root" in data:
        f.disk_root = Disk(**data["disk_root"])
    if "instance" in data:
        f.instance = Instance(**data["instance"])
        f.aws_status = "ok"
    if "family_types" in data:
        f.family_types = [
            InstanceType(t["name"], t["vcpus"], t["memory_mib"], tuple(t["architectures"]))
            for t in data["family_types"]
        ]
    if "cpu" in data:
        f.cpu = MetricStats(**data["cpu"])
    if "asg" in data:
        f.asg = AutoScalingGroup(**data["asg"])
    f.errors = list(data.get("errors", []))
    return f


def make_services(settings: Any, tmp_path: Path) -> Any:
    """Services over a fresh database in ``tmp_path``, no Slack transport."""
    from bot.config import Secrets
    from bot.services import build_services

    return build_services(settings, Secrets(), tmp_path / "stabilize.db", slack=False)


def aws_client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1")


def _put(namespace: str, name: str, dims: list[dict], values: list[float]) -> None:
    now = dt.datetime.now(dt.UTC)
    data = [
        {
            "MetricName": name,
            "Dimensions": dims,
            "Timestamp": now - dt.timedelta(minutes=5 * (len(values) - 1 - i), seconds=30),
            "Value": v,
            "Unit": "Percent",
        }
        for i, v in enumerate(values)
    ]
    aws_client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=data)


def make_world(*, instance_type: str = "t3.micro", cpu: float = 95.0, mem: float | None = 97.0):
    """prod-web-01 in web-asg (max 4) with an hour of CPU at ``cpu`` % and, if given, the
    CloudWatch agent's mem_used_percent at ``mem`` %."""
    ec2 = aws_client("ec2")
    image = "ami-12c6146b"  # one of moto's built-in images (listing them all is slow)
    iid = ec2.run_instances(
        ImageId=image,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "prod-web-01"}]}
        ],
    )["Instances"][0]["InstanceId"]
    asg = aws_client("autoscaling")
    asg.create_launch_configuration(
        LaunchConfigurationName="web-lc", ImageId=image, InstanceType=instance_type
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchConfigurationName="web-lc",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    asg.attach_instances(InstanceIds=[iid], AutoScalingGroupName="web-asg")
    _put("AWS/EC2", "CPUUtilization", [{"Name": "InstanceId", "Value": iid}], [cpu] * 12)
    if mem is not None:
        dims = [
            {"Name": "InstanceId", "Value": iid},
            {"Name": "ImageId", "Value": image},
            {"Name": "InstanceType", "Value": instance_type},
        ]
        _put("CWAgent", "mem_used_percent", dims, [mem] * 6)
    return iid
