"""resize-instance: snapshot the EBS volumes, stop, change the type, start, wait for the
status checks, verify. A failure after the stop puts the old type back and starts it.

An Auto Scaling Group member (only with ``force=true``) would be replaced by its group while it
is stopped, because the stop fails the group's health check. So for a member the run suspends
the group's ``HealthCheck`` and ``ReplaceUnhealthy`` processes before the stop and resumes
exactly those it suspended afterwards (also on rollback); processes an operator had already
suspended stay suspended.
"""

from __future__ import annotations

from typing import Any

from bot.errors import ExecutionError, InputError
from runbooks.executors.aws import aws_error
from runbooks.model import AlreadyDone, PlanStep, Runbook, RunContext, Step, Target
from runbooks.params import Param

NAME = "resize-instance"
ASG_TAG = "aws:autoscaling:groupName"
# The processes that would replace a stopped member.
PROTECT = ("HealthCheck", "ReplaceUnhealthy")

PARAMS = (
    Param("type", "str", "the new instance type, e.g. t3.large", required=True),
    Param("allow_downsize", "bool", "allow a smaller type than the current one", default=False),
    Param("force", "bool", "resize even an Auto Scaling Group member", default=False),
)


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    if not reservations or not reservations[0]["Instances"]:
        raise InputError(f"instance {instance_id} not found")
    return dict(reservations[0]["Instances"][0])


def _types(ec2: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    found = ec2.describe_instance_types(InstanceTypes=sorted(set(names)))["InstanceTypes"]
    return {t["InstanceType"]: t for t in found}


def _shape(info: dict[str, Any]) -> tuple[int, int]:
    return int(info["VCpuInfo"]["DefaultVCpus"]), int(info["MemoryInfo"]["SizeInMiB"])


def check(target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """The type exists, has the instance's architecture, is larger (unless allowed), and the
    instance is not an ASG member (unless ``force``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    instance_id = target.host.instance_id
    assert instance_id is not None
    new = params["type"]
    ec2 = target.services.aws("ec2")
    try:
        instance = _instance(ec2, instance_id)
        current = instance["InstanceType"]
        try:
            types = _types(ec2, [current, new])
        except ClientError as exc:
            if "InvalidInstanceType" in str(exc):
                raise InputError(
                    f"type={new}: no such instance type in {target.settings.aws.region}"
                ) from None
            raise
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot check {target.name} ({instance_id}): {aws_error(exc)}") from None
    if new == current:
        raise InputError(f"{target.name} is already {current}: nothing to resize")
    arch = (
        instance.get("Architecture") or types[current]["ProcessorInfo"]["SupportedArchitectures"][0]
    )
    supported = types[new]["ProcessorInfo"]["SupportedArchitectures"]
    if arch not in supported:
        raise InputError(
            f"type={new} is {'/'.join(supported)} but {target.name} is {arch}:"
            " choose a type of the same architecture"
        )
    (cpu_old, mem_old), (cpu_new, mem_new) = _shape(types[current]), _shape(types[new])
    if (cpu_new < cpu_old or mem_new < mem_old) and not params.get("allow_downsize"):
        raise InputError(
            f"type={new} ({cpu_new} vCPU, {mem_new} MiB) is smaller than {current}"
            f" ({cpu_old} vCPU, {mem_old} MiB): add allow_downsize=true if you mean it"
        )
    if (cpu_new, mem_new) == (cpu_old, mem_old) and not params.get("allow_downsize"):
        raise InputError(
            f"type={new} is not larger than {current} ({cpu_old} vCPU, {mem_old} MiB):"
            " choose a larger type, or add allow_downsize=true for a sideways move"
        )
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    if ASG_TAG in tags and not params.get("force"):
        raise InputError(
            f"{target.name} belongs to Auto Scaling Group {tags[ASG_TAG]}, which may replace"
            " a stopped instance: scale the group instead (scale-asg), or add force=true"
            " (the run then suspends the group's HealthCheck and ReplaceUnhealthy while it works)"
        )
    return params


def plan(target: Target, params: dict[str, Any]) -> list[PlanStep]:
    iid = target.host.instance_id
    new = params["type"]
    ids = f"InstanceIds=[{iid!r}]"
    return [
        PlanStep("target", "note", f"{target.name} is EC2 instance {iid}"),
        PlanStep("inspect", "aws", f"ec2.describe_instances({ids})  # current type, volumes"),
        PlanStep(
            "snapshot",
            "aws",
            "ec2.create_snapshot(VolumeId=<each attached EBS volume>, TagSpecifications="
            "[{'ResourceType': 'snapshot', 'Tags': [{'Key': 'stabilize:request_id', ...}]}])"
            " then waiter snapshot_completed",
        ),
        PlanStep(
            "protect",
            "aws",
            "if the instance is an Auto Scaling Group member: autoscaling.suspend_processes("
            f"AutoScalingGroupName=<its group>, ScalingProcesses={list(PROTECT)!r}"
            " minus those already suspended)",
        ),
        PlanStep("stop", "aws", f"ec2.stop_instances({ids}) then waiter instance_stopped"),
        PlanStep(
            "modify",
            "aws",
            f"ec2.modify_instance_attribute(InstanceId={iid!r}, InstanceType={{'Value': {new!r}}})",
        ),
        PlanStep("start", "aws", f"ec2.start_instances({ids}) then waiter instance_running"),
        PlanStep("status", "aws", f"waiter instance_status_ok({ids})"),
        PlanStep(
            "release",
            "aws",
            "autoscaling.resume_processes(AutoScalingGroupName=<its group>,"
            " ScalingProcesses=<those this run suspended>)",
        ),
        PlanStep("verify", "aws", f"ec2.describe_instances({ids})  # type is {new}, running"),
        PlanStep(
            "rollback",
            "aws",
            f"ec2.stop_instances({ids}) if needed, ec2.modify_instance_attribute(InstanceId="
            f"{iid!r}, InstanceType={{'Value': <the type found at start>}}),"
            f" ec2.start_instances({ids}), waiter instance_running,"
            " autoscaling.resume_processes(<those this run suspended>)",
            on_failure=True,
        ),
    ]


def _iid(ctx: RunContext) -> str:
    assert ctx.host.instance_id is not None
    return ctx.host.instance_id


def _describe(ctx: RunContext) -> dict[str, Any]:
    assert ctx.aws is not None
    out = ctx.aws.call("ec2", "describe_instances", InstanceIds=[_iid(ctx)])
    return dict(out["Reservations"][0]["Instances"][0])


def _inspect(ctx: RunContext) -> str:
    instance = _describe(ctx)
    ctx.state["old_type"] = instance["InstanceType"]
    ctx.state["volumes"] = [
        m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m
    ]
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    ctx.state["asg"] = tags.get(ASG_TAG)
    if instance["InstanceType"] == ctx.params["type"]:
        raise AlreadyDone(f"{ctx.host_name} is already {ctx.params['type']}; nothing changed")
    state = instance["State"]["Name"]
    if state not in ("running", "stopped"):
        raise ExecutionError(f"{ctx.host_name} is {state}: wait until it is running or stopped")
    return f"{instance['InstanceType']}, {state}, {len(ctx.state['volumes'])} EBS volume(s)"


def _snapshot(ctx: RunContext) -> str:
    assert ctx.aws is not None
    tags = [
        {"Key": "stabilize:request_id", "Value": ctx.request_id},
        {"Key": "stabilize:host", "Value": ctx.host_name},
        {"Key": "Name", "Value": f"stabilize {ctx.request_id} before resize"},
    ]
    ids = []
    for volume in ctx.state["volumes"]:
        snap = ctx.aws.call(
            "ec2",
            "create_snapshot",
            VolumeId=volume,
            Description=f"stabilize {ctx.request_id}: {ctx.host_name} before resize",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}],
        )
        ids.append(snap["SnapshotId"])
    if ids:
        ctx.aws.wait("ec2", "snapshot_completed", SnapshotIds=ids)
    ctx.state["snapshots"] = ids
    return f"snapshots {', '.join(ids) or '(no EBS volumes)'} completed"


def _protect(ctx: RunContext) -> str:
    """Keep the group from replacing its member while it is stopped."""
    assert ctx.aws is not None
    asg = ctx.state.get("asg")
    if not asg:
        return "not an Auto Scaling Group member: nothing to protect"
    groups = ctx.aws.call(
        "autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[asg]
    )["AutoScalingGroups"]
    already = {p["ProcessName"] for g in groups for p in g.get("SuspendedProcesses", [])}
    todo = [p for p in PROTECT if p not in already]
    if todo:
        ctx.aws.call(
            "autoscaling", "suspend_processes", AutoScalingGroupName=asg, ScalingProcesses=todo
        )
    ctx.state["suspended"] = todo
    kept = f"; {', '.join(sorted(already & set(PROTECT)))} already suspended" if already else ""
    return f"{asg}: suspended {', '.join(todo) or 'nothing'}{kept}"


def _release(ctx: RunContext) -> str:
    """Resume exactly what ``_protect`` suspended (idempotent: rollback may call it again)."""
    assert ctx.aws is not None
    asg, todo = ctx.state.get("asg"), ctx.state.pop("suspended", [])
    if not asg or not todo:
        return "nothing to resume"
    ctx.aws.call("autoscaling", "resume_processes", AutoScalingGroupName=asg, ScalingProcesses=todo)
    return f"{asg}: resumed {', '.join(todo)}"


def _stop(ctx: RunContext) -> str:
    assert ctx.aws is not None
    ctx.state["stopped"] = True
    ctx.aws.call("ec2", "stop_instances", InstanceIds=[_iid(ctx)])
    ctx.aws.wait("ec2", "instance_stopped", InstanceIds=[_iid(ctx)])
    return f"{_iid(ctx)} stopped"


def _modify(ctx: RunContext, new: str | None = None) -> str:
    assert ctx.aws is not None
    value = new or ctx.params["type"]
    ctx.aws.call(
        "ec2", "modify_instance_attribute", InstanceId=_iid(ctx), InstanceType={"Value": value}
    )
    return f"type set to {value}"


def _start(ctx: RunContext) -> str:
    assert ctx.aws is not None
    ctx.aws.call("ec2", "start_instances", InstanceIds=[_iid(ctx)])
    ctx.aws.wait("ec2", "instance_running", InstanceIds=[_iid(ctx)])
    return f"{_iid(ctx)} running"


def _status(ctx: RunContext) -> str:
    assert ctx.aws is not None
    ctx.aws.wait("ec2", "instance_status_ok", InstanceIds=[_iid(ctx)])
    return "status checks passed"


def steps(ctx: RunContext) -> list[Step]:
    return [
        Step("inspect", _inspect, changes=False),
        Step("snapshot", _snapshot, changes=False),
        Step("protect", _protect),
        Step("stop", _stop),
        Step("modify", _modify),
        Step("start", _start),
        Step("status", _status),
        Step("release", _release),
    ]


def verify(ctx: RunContext) -> str:
    instance = _describe(ctx)
    kind, state = instance["InstanceType"], instance["State"]["Name"]
    if kind != ctx.params["type"] or state != "running":
        raise ExecutionError(
            f"{ctx.host_name} is {kind} and {state}, expected {ctx.params['type']}"
        )
    return f"{ctx.host_name} is {kind} and running"


def rollback(ctx: RunContext) -> str:
    """Put the old type back and start the instance (only if this run stopped it)."""
    assert ctx.aws is not None
    if not ctx.state.get("stopped"):
        released = _release(ctx)
        return f"nothing to undo (the instance was not stopped); {released}"
    old = ctx.state["old_type"]
    instance = _describe(ctx)
    if instance["State"]["Name"] != "stopped":
        ctx.aws.call("ec2", "stop_instances", InstanceIds=[_iid(ctx)])
        ctx.aws.wait("ec2", "instance_stopped", InstanceIds=[_iid(ctx)])
    if instance["InstanceType"] != old:
        _modify(ctx, old)
    _start(ctx)
    return f"{ctx.host_name} back to {old} and running; {_release(ctx)}"


RUNBOOK = Runbook(
    name=NAME,
    description="Snapshot the EBS volumes, stop, change the instance type, start, wait for"
    " status checks, verify; rolls back to the old type on failure",
    risk="high",
    target="instance",
    params=PARAMS,
    plan=plan,
    steps=steps,
    verify=verify,
    rollback=rollback,
    check=check,
)
