"""scale-asg: set an Auto Scaling Group's desired capacity within its min/max, wait until that
many instances are InService, verify. A failure puts the old desired capacity back.
"""

from __future__ import annotations

import time
from typing import Any

from bot.errors import ExecutionError, InputError
from runbooks.executors.aws import aws_error
from runbooks.model import AlreadyDone, PlanStep, Runbook, RunContext, Step, Target
from runbooks.params import Param

NAME = "scale-asg"

PARAMS = (
    Param("desired", "int", "the new desired capacity", minimum=0, maximum=10000),
    Param(
        "by",
        "int",
        "change the desired capacity by this much (+N or -N)",
        minimum=-1000,
        maximum=1000,
    ),
)


def _group(services: Any, name: str) -> dict[str, Any]:
    groups = services.aws("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ]
    if not groups:
        raise InputError(f"Auto Scaling Group {name} not found")
    return dict(groups[0])


def _target_capacity(group: dict[str, Any], params: dict[str, Any]) -> int:
    if "desired" in params:
        return int(params["desired"])
    return int(group["DesiredCapacity"]) + int(params["by"])


def check(target: Target, params: dict[str, Any]) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    if ("desired" in params) == ("by" in params):
        raise InputError("scale-asg takes either desired=N or by=+N (one of them, not both)")
    if params.get("by") == 0:
        raise InputError("by=0 changes nothing: give +N or -N")
    name = target.host.asg
    assert name is not None
    try:
        group = _group(target.services, name)
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot read Auto Scaling Group {name}: {aws_error(exc)}") from None
    want, low, high = _target_capacity(group, params), group["MinSize"], group["MaxSize"]
    if want > high:
        raise InputError(
            f"{want} instances is beyond {name}'s MaxSize {high}: raise it first with"
            f" `aws autoscaling update-auto-scaling-group --auto-scaling-group-name {name}"
            f" --max-size {want}`"
        )
    if want < low:
        raise InputError(
            f"{want} instances is below {name}'s MinSize {low}: lower it first with"
            f" `aws autoscaling update-auto-scaling-group --auto-scaling-group-name {name}"
            f" --min-size {want}`"
        )
    return params


def plan(target: Target, params: dict[str, Any]) -> list[PlanStep]:
    name = target.host.asg
    want = params["desired"] if "desired" in params else f"<current desired> {params['by']:+d}"
    return [
        PlanStep(
            "inspect",
            "aws",
            f"autoscaling.describe_auto_scaling_groups("
            f"AutoScalingGroupNames=[{name!r}])  # current desired, min, max",
        ),
        PlanStep(
            "scale",
            "aws",
            f"autoscaling.set_desired_capacity(AutoScalingGroupName="
            f"{name!r}, DesiredCapacity={want}, HonorCooldown=False)",
        ),
        PlanStep(
            "wait",
            "aws",
            f"describe_auto_scaling_groups until {want} instances are"
            " InService and Healthy (bounded)",
        ),
        PlanStep("verify", "aws", f"DesiredCapacity == {want} and {want} InService"),
        PlanStep(
            "rollback",
            "aws",
            f"autoscaling.set_desired_capacity(AutoScalingGroupName="
            f"{name!r}, DesiredCapacity=<the desired capacity found at start>)",
            on_failure=True,
        ),
    ]


def _name(ctx: RunContext) -> str:
    assert ctx.host.asg is not None
    return ctx.host.asg


def _read(ctx: RunContext) -> dict[str, Any]:
    assert ctx.aws is not None
    out = ctx.aws.call(
        "autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[_name(ctx)]
    )
    if not out["AutoScalingGroups"]:
        raise ExecutionError(f"Auto Scaling Group {_name(ctx)} is gone")
    return dict(out["AutoScalingGroups"][0])


def _in_service(group: dict[str, Any]) -> int:
    return sum(
        1
        for i in group.get("Instances", [])
        if i.get("LifecycleState") == "InService" and i.get("HealthStatus", "Healthy") == "Healthy"
    )


def _inspect(ctx: RunContext) -> str:
    group = _read(ctx)
    want = _target_capacity(group, ctx.params)
    if not group["MinSize"] <= want <= group["MaxSize"]:
        raise ExecutionError(
            f"{want} is outside {_name(ctx)}'s {group['MinSize']}–{group['MaxSize']} now"
        )
    ctx.state.update(old=group["DesiredCapacity"], want=want)
    if group["DesiredCapacity"] == want and _in_service(group) == want:
        raise AlreadyDone(f"{_name(ctx)} already has {want} InService; nothing changed")
    return f"desired {group['DesiredCapacity']}, {_in_service(group)} InService → {want}"


def _scale(ctx: RunContext) -> str:
    assert ctx.aws is not None
    ctx.aws.call(
        "autoscaling",
        "set_desired_capacity",
        AutoScalingGroupName=_name(ctx),
        DesiredCapacity=ctx.state["want"],
        HonorCooldown=False,
    )
    ctx.state["scaled"] = True
    return f"desired capacity set to {ctx.state['want']}"


def _wait(ctx: RunContext) -> str:
    deadline = time.monotonic() + ctx.timing.asg_wait
    want = ctx.state["want"]
    while True:
        count = _in_service(_read(ctx))
        if count == want:
            return f"{count} InService"
        if time.monotonic() > deadline:
            raise ExecutionError(
                f"{count} of {want} instances InService after {ctx.timing.asg_wait:.0f}s"
            )
        time.sleep(ctx.timing.poll_interval)


def steps(ctx: RunContext) -> list[Step]:
    return [
        Step("inspect", _inspect, changes=False),
        Step("scale", _scale),
        Step("wait", _wait, timeout=ctx.timing.asg_wait + 60),
    ]


def verify(ctx: RunContext) -> str:
    group = _read(ctx)
    want = ctx.state["want"]
    if group["DesiredCapacity"] != want or _in_service(group) != want:
        raise ExecutionError(
            f"{_name(ctx)} has desired {group['DesiredCapacity']} and {_in_service(group)}"
            f" InService, expected {want}"
        )
    return f"{_name(ctx)}: {want} desired, {want} InService"


def rollback(ctx: RunContext) -> str:
    assert ctx.aws is not None
    if not ctx.state.get("scaled"):
        return "nothing to undo"
    ctx.aws.call(
        "autoscaling",
        "set_desired_capacity",
        AutoScalingGroupName=_name(ctx),
        DesiredCapacity=ctx.state["old"],
        HonorCooldown=False,
    )
    return f"desired capacity back to {ctx.state['old']}"


RUNBOOK = Runbook(
    name=NAME,
    description="Set the Auto Scaling Group's desired capacity within min/max, wait until"
    " that many instances are InService, verify",
    risk="medium",
    target="asg",
    params=PARAMS,
    plan=plan,
    steps=steps,
    verify=verify,
    rollback=rollback,
    check=check,
)
