"""AWS facts with boto3: the instance and its type, its family's sizes, CPU over the last
hour, CloudWatch-agent memory metrics, its Auto Scaling Group.

Calls run in threads, independent ones concurrently. A denied permission or an unreachable
endpoint costs only the facts that needed it, with a line in ``facts.errors`` that names the
IAM action to grant (or the endpoint that did not answer).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.db import utcnow
from bot.facts import AutoScalingGroup, Facts, HostTarget, Instance, InstanceType, MetricStats
from bot.facts_ssh import executor

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

AWS_TIMEOUT = 20.0  # all AWS facts of one host, together
PERIOD = 300
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Unauthorized"}
CWAGENT_METRICS = ("mem_used_percent", "swap_used_percent")
_IAM_PREFIX = {"ec2": "ec2", "cloudwatch": "cloudwatch", "autoscaling": "autoscaling"}


class AwsFailure(Exception):
    """One AWS call failed; ``str()`` is the line for ``facts.errors``."""


def _action(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_"))


def explain(service: str, op: str, exc: BaseException) -> str:
    """One line naming the failed call and how to fix it."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )

    action = f"{_IAM_PREFIX.get(service, service)}:{_action(op)}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))
        # An error body botocore could not decode (e.g. XML where it expected JSON) arrives
        # as the HTTP status with the raw body: dig the real code out of it.
        embedded = re.search(r"<Code>([A-Za-z.]+)</Code>", message)
        if embedded:
            code = embedded.group(1)
            found = re.search(r"<Message>([^<]*)</Message>", message)
            message = found.group(1) if found else ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in DENIED or (status == 403 and code == "403"):
            return f"aws: {action} denied ({code}); grant it to the bot's IAM role"
        return _one_line(f"aws: {action} failed: {code}: {message}".rstrip(": "))
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return f"aws: cannot reach the {service} API ({exc}); check the network or AWS_ENDPOINT_URL"
    if isinstance(exc, NoCredentialsError):
        return "aws: no credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a role)"
    if isinstance(exc, NoRegionError):
        return "aws: no region (set aws.region in the config)"
    return _one_line(f"aws: {action} failed: {type(exc).__name__}: {exc}")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def call(services: Services, service: str, op: str, **kwargs: Any) -> dict[str, Any]:
    """``services.aws(service).<op>(**kwargs)`` in a thread; failures become AwsFailure."""

    def run() -> dict[str, Any]:
        return getattr(services.aws(service), op)(**kwargs)  # type: ignore[no-any-return]

    try:
        return await asyncio.get_running_loop().run_in_executor(executor(), run)
    except Exception as exc:
        log.debug("aws call %s.%s failed", service, op, exc_info=True)
        raise AwsFailure(explain(service, op, exc)) from None


async def find_instance_by_name(services: Services, name: str) -> dict[str, Any] | None:
    """The newest running or stopped instance tagged ``Name=name``, or None."""
    answer = await call(
        services,
        "ec2",
        "describe_instances",
        Filters=[
            {"Name": "tag:Name", "Values": [name]},
            {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"],
            },
        ],
    )
    found = [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]
    if not found:
        return None
    found.sort(key=lambda i: str(i.get("LaunchTime", "")), reverse=True)
    return found[0]


def _asg_tag(instance: dict[str, Any]) -> str | None:
    for tag in instance.get("Tags", []) or []:
        if tag.get("Key") == "aws:autoscaling:groupName":
            return str(tag.get("Value"))
    return None


async def gather_aws(services: Services, facts: Facts, target: HostTarget) -> None:
    """Fill the AWS facts of ``facts``; what fails is named in ``facts.errors``."""
    before = len(facts.errors)
    try:
        await asyncio.wait_for(_gather(services, facts, target), AWS_TIMEOUT)
    except TimeoutError:
        facts.errors.append(
            f"aws: no complete answer within {AWS_TIMEOUT:g}s (is the AWS API reachable?)"
        )
    failed = len(facts.errors) > before
    # Two facts behind the same denied call (instance and group CPU) make one line.
    facts.errors[before:] = list(dict.fromkeys(facts.errors[before:]))
    if facts.instance is None:
        facts.aws_status = "error"
    else:
        facts.aws_status = "partial" if failed else "ok"


async def _gather(services: Services, facts: Facts, target: HostTarget) -> None:
    assert target.instance_id
    iid = target.instance_id
    raw: dict[str, Any] | None = None
    try:
        answer = await call(services, "ec2", "describe_instances", InstanceIds=[iid])
        found = [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]
        raw = found[0] if found else None
        if raw is None:
            facts.errors.append(f"aws: instance {iid} not found (check hosts.{target.name})")
    except AwsFailure as exc:
        facts.errors.append(str(exc))
    jobs = [_cpu(services, facts, iid), _cwagent(services, facts, iid)]
    asg_name = target.asg or (_asg_tag(raw) if raw else None)
    jobs.append(_asg(services, facts, iid, asg_name))
    if raw is not None:
        facts.instance = Instance(
            id=iid,
            type=str(raw.get("InstanceType", "")),
            state=str((raw.get("State") or {}).get("Name", "unknown")),
            architecture=raw.get("Architecture"),
        )
        jobs.append(_types(services, facts))
        if facts.instance.family.startswith("t"):
            jobs.append(_credits(services, facts, iid))
    await asyncio.gather(*jobs)


async def _types(services: Services, facts: Facts) -> None:
    assert facts.instance
    inst = facts.instance
    try:
        answer = await call(
            services,
            "ec2",
            "describe_instance_types",
            Filters=[{"Name": "instance-type", "Values": [f"{inst.family}.*"]}],
        )
    except AwsFailure as exc:
        facts.errors.append(str(exc))
        return
    family = []
    for t in answer.get("InstanceTypes", []):
        name = str(t.get("InstanceType", ""))
        if name.split(".", 1)[0] != inst.family:
            continue  # "t3.*" must not bring t3a
        family.append(
            InstanceType(
                name=name,
                vcpus=int((t.get("VCpuInfo") or {}).get("DefaultVCpus", 0)),
                memory_mib=int((t.get("MemoryInfo") or {}).get("SizeInMiB", 0)),
                architectures=tuple(
                    (t.get("ProcessorInfo") or {}).get("SupportedArchitectures", [])
                ),
            )
        )
    family.sort(key=lambda t: (t.memory_mib, t.vcpus, t.name))
    facts.family_types = family
    own = next((t for t in family if t.name == inst.type), None)
    if own is None:
        facts.errors.append(f"aws: instance type {inst.type} not described by EC2")
        return
    facts.instance = replace(facts.instance or inst, vcpus=own.vcpus, memory_mib=own.memory_mib)


async def _credits(services: Services, facts: Facts, iid: str) -> None:
    try:
        answer = await call(
            services, "ec2", "describe_instance_credit_specifications", InstanceIds=[iid]
        )
    except AwsFailure as exc:
        facts.errors.append(str(exc))
        return
    specs = answer.get("InstanceCreditSpecifications", [])
    if specs and facts.instance:
        mode = specs[0].get("CpuCredits")
        facts.instance = replace(facts.instance, credit_mode=mode)


async def _stats(
    services: Services, namespace: str, metric: str, dimensions: list[dict[str, str]]
) -> MetricStats | None:
    end = utcnow()
    answer = await call(
        services,
        "cloudwatch",
        "get_metric_statistics",
        Namespace=namespace,
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=end - timedelta(hours=1),
        EndTime=end,
        Period=PERIOD,
        Statistics=["Average", "Maximum"],
    )
    points = sorted(answer.get("Datapoints", []), key=lambda p: p["Timestamp"])
    if not points:
        return None
    averages = [round(float(p["Average"]), 2) for p in points]
    return MetricStats(
        average=round(sum(averages) / len(averages), 2),
        maximum=round(max(float(p.get("Maximum", p["Average"])) for p in points), 2),
        datapoints=averages,
    )


async def _cpu(services: Services, facts: Facts, iid: str) -> None:
    try:
        facts.cpu = await _stats(
            services, "AWS/EC2", "CPUUtilization", [{"Name": "InstanceId", "Value": iid}]
        )
    except AwsFailure as exc:
        facts.errors.append(str(exc))


async def _cwagent(services: Services, facts: Facts, iid: str) -> None:
    """CloudWatch-agent metrics carry extra dimensions (ImageId, InstanceType…): find the
    exact dimension set with list_metrics first."""
    try:
        listed = await call(
            services,
            "cloudwatch",
            "list_metrics",
            Namespace="CWAgent",
            Dimensions=[{"Name": "InstanceId", "Value": iid}],
        )
        found: dict[str, MetricStats] = {}
        for metric in listed.get("Metrics", []):
            name = metric.get("MetricName")
            if name in CWAGENT_METRICS and name not in found:
                stats = await _stats(services, "CWAgent", name, metric.get("Dimensions", []))
                if stats:
                    found[name] = stats
        facts.cwagent = found
    except AwsFailure as exc:
        facts.errors.append(str(exc))


async def _asg(services: Services, facts: Facts, iid: str, name: str | None) -> None:
    try:
        if name is None:
            answer = await call(
                services, "autoscaling", "describe_auto_scaling_instances", InstanceIds=[iid]
            )
            groups = answer.get("AutoScalingInstances", [])
            if not groups:
                return  # not an ASG member
            name = str(groups[0]["AutoScalingGroupName"])
        answer = await call(
            services, "autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[name]
        )
        found = answer.get("AutoScalingGroups", [])
        if not found:
            facts.errors.append(f"aws: Auto Scaling Group {name!r} not found")
            return
        g = found[0]
        facts.asg = AutoScalingGroup(
            name=name,
            desired=int(g.get("DesiredCapacity", 0)),
            min_size=int(g.get("MinSize", 0)),
            max_size=int(g.get("MaxSize", 0)),
            in_service=sum(
                1 for i in g.get("Instances", []) if i.get("LifecycleState") == "InService"
            ),
        )
        facts.asg_cpu = await _stats(
            services,
            "AWS/EC2",
            "CPUUtilization",
            [{"Name": "AutoScalingGroupName", "Value": name}],
        )
    except AwsFailure as exc:
        facts.errors.append(str(exc))
