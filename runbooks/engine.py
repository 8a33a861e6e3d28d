"""The runbook engine: validate → plan → execute (steps, verify, rollback) → audit.

The approval flow reaches it through ``services.engine`` (an ``Engine``, whose methods are the
module functions below). ``execute`` owns the host lock, the ``execution.*`` audit rows, step
timeouts, verification and compensation; ``recover_interrupted`` runs once at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.config import HOST_NAME_RE
from bot.errors import InputError
from runbooks import add_swap, resize_instance, scale_asg, store
from runbooks.executors import has_shell, shell_executor
from runbooks.executors.aws import AwsExecutor
from runbooks.model import (
    AlreadyDone,
    ExecutionRequest,
    ExecutionResult,
    PlanStep,
    Refused,
    Runbook,
    RunContext,
    Step,
    StepResult,
    Target,
    Timing,
)
from runbooks.params import parse_params
from runbooks.recovery import recover_interrupted, recovery_job

if TYPE_CHECKING:
    from bot.services import Services

__all__ = [
    "RUNBOOKS",
    "Engine",
    "ExecutionRequest",
    "ExecutionResult",
    "PlanStep",
    "Runbook",
    "Timing",
    "execute",
    "format_plan",
    "get_runbook",
    "lock_holder",
    "plan",
    "recover_interrupted",
    "recovery_job",
    "validate",
]

log = logging.getLogger(__name__)

RUNBOOKS: dict[str, Runbook] = {
    rb.name: rb for rb in (add_swap.RUNBOOK, resize_instance.RUNBOOK, scale_asg.RUNBOOK)
}

Progress = Callable[[str], Awaitable[None]]

_NEEDS = {
    "shell": "ssh settings (hosts.{h}.ssh) or executor: ssm with an instance_id",
    "instance": "an instance_id (hosts.{h}.instance_id)",
    "asg": "an Auto Scaling Group (hosts.{h}.asg)",
}


def get_runbook(name: str) -> Runbook:
    try:
        return RUNBOOKS[name]
    except KeyError:
        known = ", ".join(sorted(RUNBOOKS))
        raise InputError(f"unknown runbook {name!r} (known runbooks: {known})") from None


def _target(services: Services, runbook: Runbook, host: str) -> Target:
    if not HOST_NAME_RE.match(host or ""):
        raise InputError(f"invalid host name {host!r} (letters, digits, . _ -)")
    settings = services.settings.host(host)
    if settings is None:
        known = ", ".join(sorted(services.settings.hosts)) or "none configured"
        raise InputError(
            f"unknown host {host!r}: not in the inventory (hosts: {known}); add it under"
            f" hosts: in {services.settings.source}"
        )
    ok = {
        "shell": has_shell(settings),
        "instance": settings.instance_id is not None,
        "asg": settings.asg is not None,
    }[runbook.target]
    if not ok:
        raise InputError(
            f"{runbook.name} cannot run on {host}: it needs {_NEEDS[runbook.target].format(h=host)}"
        )
    return Target(services, host, settings)


def validate(
    services: Services,
    runbook: str,
    host: str,
    raw_params: dict[str, Any],
    *,
    check_lock: bool = True,
) -> dict[str, Any]:
    """Checked parameters with defaults filled in, or InputError (one line). Callers audit
    ``input.rejected``. Checks that need AWS (instance types, ASG bounds) call the API.
    A host busy with another runbook is refused naming who holds it (``check_lock=False``
    for read-only uses such as ``stabilize plan``)."""
    rb = get_runbook(runbook)
    target = _target(services, rb, host)
    params = parse_params(rb.name, rb.params, raw_params or {})
    if check_lock:
        held = store.lock_holder(services, host)
        if held is not None:
            raise InputError(store.describe_lock(held) + " (ask again when it has finished)")
    if rb.check is not None:
        params = rb.check(target, params)
    return params


def plan(services: Services, runbook: str, host: str, params: dict[str, Any]) -> list[PlanStep]:
    """The exact commands and API calls, touching nothing (params as ``validate`` returned)."""
    rb = get_runbook(runbook)
    target = _target(services, rb, host)
    return rb.plan(target, parse_params(rb.name, rb.params, params))


def format_plan(steps: list[PlanStep]) -> str:
    """Numbered plan text; the rollback comes last under its own heading."""
    lines, n = [], 0
    for step in steps:
        if step.on_failure:
            continue
        if step.kind == "note":
            lines.append(f"# {step.text}")
            continue
        if step.kind == "check":
            lines.append(f"   check: {step.text}")
            continue
        n += 1
        lines.append(f"{n}. [{step.name}] {step.text}")
    undo = [s for s in steps if s.on_failure]
    if undo:
        lines.append("on failure, roll back:")
        lines += [f"   - {s.text}" for s in undo]
    return "\n".join(lines)


def _timing(services: Services) -> Timing:
    timing = getattr(services.engine, "timing", None)
    return timing if isinstance(timing, Timing) else Timing()


def _one_line(exc: BaseException) -> str:
    from bot.errors import StabilizeError

    text = str(exc)
    if not text or not isinstance(exc, StabilizeError | TimeoutError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return " ".join(text.split())


async def _say(progress: Progress | None, text: str) -> None:
    if progress is None:
        return
    try:
        await progress(text)
    except Exception:  # a Slack hiccup must never stop a runbook half-way
        log.warning("progress callback failed", exc_info=True)


async def _call(fn: Callable[[RunContext], str], ctx: RunContext, timeout: float) -> str:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, ctx), timeout=timeout)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:.0f}s") from None


async def execute(
    services: Services, job: ExecutionRequest, *, progress: Progress | None = None
) -> ExecutionResult:
    """Run ``job`` once: lock the host, run the steps, verify, roll back on failure, audit."""
    result = ExecutionResult(
        ok=False, state="refused", request_id=job.request_id, runbook=job.runbook, host=job.host
    )
    try:
        rb = get_runbook(job.runbook)
        raw = {k: str(v) for k, v in job.params.items()}
        # Re-checked right before the run (the target may have changed since the approval);
        # in a thread, because the checks may call the AWS API.
        params = await asyncio.to_thread(
            validate, services, job.runbook, job.host, raw, check_lock=False
        )
        steps_plan = plan(services, job.runbook, job.host, params)
    except InputError as exc:
        result.error = str(exc)
        _refused(services, job, result.error)
        await _say(progress, f":no_entry: {job.runbook} on {job.host} refused: {exc}")
        return result
    dry = bool(services.dry_run)
    try:
        execution_id = store.begin(services, job, params, "dry_run" if dry else "running")
    except store.Busy as exc:
        result.error = str(exc)
        _refused(services, job, result.error)
        await _say(progress, f":no_entry: {exc}")
        return result
    if dry:
        text = format_plan(steps_plan)
        result.ok, result.state = True, "dry_run"
        result.summary = "dry run: nothing was changed; the plan is:\n" + text
        store.finish(
            services,
            execution_id,
            job,
            "dry_run",
            "execution.succeeded",
            {"dry_run": True, "summary": "dry run: plan posted, nothing executed"},
        )
        await _say(progress, f":memo: Dry run — {job.runbook} on {job.host} would run:\n{text}")
        _count(services, job.runbook, "dry_run")
        return result
    return await _run(services, rb, job, params, execution_id, result, progress)


async def _run(
    services: Services,
    rb: Runbook,
    job: ExecutionRequest,
    params: dict[str, Any],
    execution_id: int,
    result: ExecutionResult,
    progress: Progress | None,
) -> ExecutionResult:
    timing = _timing(services)
    host = services.settings.hosts[job.host]
    ctx = RunContext(services, job.request_id, job.host, host, params, timing)
    ctx.aws = AwsExecutor(services, timing)
    started = time.monotonic()
    final: dict[str, Any] = {}
    try:
        try:
            if rb.target == "shell":
                ctx.shell = shell_executor(services, job.host, host, timing, job.request_id)
            steps = [*rb.steps(ctx), Step("verify", rb.verify, changes=False)]
            await _say(progress, f":gear: {rb.name} on {job.host}: {len(steps)} steps")
            for n, step in enumerate(steps, 1):
                done, end = await _step(
                    services, execution_id, job, ctx, n, len(steps), step, progress
                )
                result.steps.append(done)
                if end is not None:
                    final = end
                    break
            else:
                final = {"state": "succeeded", "summary": result.steps[-1].output}
        except Exception as exc:  # building the executor or the steps failed
            final = {"state": "failed", "failed_step": "setup", "error": _one_line(exc)}
        if final.get("rollback"):
            final = await _compensate(services, rb, ctx, final, progress)
    except asyncio.CancelledError:
        # Shutting down mid-run: say so now and free the host; never retried.
        row = {
            "id": execution_id,
            "host": job.host,
            "runbook": job.runbook,
            "request_id": job.request_id,
            "incident_id": job.incident_id,
        }
        at = f"during step {len(result.steps) + 1}"
        store.mark_interrupted(services, row, {"error": "the bot was stopped", "at": at})
        raise
    finally:
        if ctx.shell is not None:
            ctx.shell.close()
    state = final.pop("state")
    final.pop("rollback", None)
    result.ok = state == "succeeded"
    result.state = state
    result.failed_step = final.get("failed_step")
    result.error = final.get("error")
    result.summary = final.get("summary") or _summary(job, state, final)
    detail = {
        **final,
        "summary": result.summary,
        "duration": round(time.monotonic() - started, 3),
        "steps": len(result.steps),
    }
    action = {"succeeded": "execution.succeeded", "rolled_back": "execution.rolled_back"}.get(
        state, "execution.failed"
    )
    store.finish(services, execution_id, job, state, action, detail)
    _count(services, job.runbook, state)
    icon = {"succeeded": ":white_check_mark:", "rolled_back": ":leftwards_arrow_with_hook:"}
    await _say(progress, f"{icon.get(state, ':x:')} {result.summary}")
    return result


async def _step(
    services: Services,
    execution_id: int,
    job: ExecutionRequest,
    ctx: RunContext,
    n: int,
    total: int,
    step: Step,
    progress: Progress | None,
) -> tuple[StepResult, dict[str, Any] | None]:
    """Run one step; returns its result and, when the run ends here, the final outcome."""
    await _say(progress, f"▶ {n}/{total} {step.name}…")
    store.step_started(services, execution_id, n, step.name)
    t0 = time.monotonic()
    end: dict[str, Any] | None = None
    ok = True
    try:
        if step.changes:
            ctx.changed = True
        output = await _call(step.run, ctx, step.timeout or ctx.timing.step_timeout)
    except AlreadyDone as exc:
        output = str(exc)
        end = {"state": "succeeded", "summary": output, "changed": False}
    except Refused as exc:
        ok, output = False, str(exc)
        end = {"state": "failed", "failed_step": step.name, "error": output, "changed": False}
    except Exception as exc:
        ok, output = False, _one_line(exc)
        end = {
            "state": "failed",
            "failed_step": step.name,
            "error": output,
            "rollback": ctx.changed,
        }
    duration = time.monotonic() - t0
    store.step_finished(services, execution_id, job, n, step.name, ok, duration, output)
    mark = "✓" if ok else "✗"
    await _say(progress, f"{mark} {n}/{total} {step.name} ({duration:.1f}s): {output}")
    return StepResult(step.name, ok, round(duration, 3), output), end


async def _compensate(
    services: Services,
    rb: Runbook,
    ctx: RunContext,
    final: dict[str, Any],
    progress: Progress | None,
) -> dict[str, Any]:
    await _say(progress, f":leftwards_arrow_with_hook: rolling back after {final['failed_step']}…")
    try:
        undone = await _call(rb.rollback, ctx, ctx.timing.step_timeout)
    except Exception as exc:
        final.update(state="failed", rollback_error=_one_line(exc))
        final["summary"] = (
            f"{rb.name} on {ctx.host_name} FAILED at {final['failed_step']}: {final['error']};"
            f" the rollback failed too: {final['rollback_error']} — check the host by hand"
        )
        return final
    final.update(state="rolled_back")
    final["summary"] = (
        f"{rb.name} on {ctx.host_name} failed at {final['failed_step']}: {final['error']};"
        f" rolled back: {undone}"
    )
    final["rolled_back"] = undone
    return final


def _refused(services: Services, job: ExecutionRequest, error: str) -> None:
    """A run that never started still leaves its trace in the audit log."""
    services.audit.append(
        "system",
        "execution.failed",
        host=job.host if HOST_NAME_RE.match(job.host or "") else None,
        runbook=job.runbook if job.runbook in RUNBOOKS else None,
        request_id=job.request_id,
        incident_id=job.incident_id,
        detail={"refused": True, "error": error},
    )
    _count(services, job.runbook if job.runbook in RUNBOOKS else "unknown", "refused")


def _summary(job: ExecutionRequest, state: str, final: dict[str, Any]) -> str:
    if state == "succeeded":
        return f"{job.runbook} on {job.host} succeeded"
    return f"{job.runbook} on {job.host} failed at {final.get('failed_step')}: {final.get('error')}"


def _count(services: Services, runbook: str, state: str) -> None:
    try:
        services.metrics.executions.labels(runbook, state).inc()
    except Exception:  # metrics are best effort
        log.debug("metrics failed", exc_info=True)


def lock_holder(services: Services, host: str) -> dict[str, Any] | None:
    """``{host, request_id, runbook, holder, since, execution_id}`` or None when free."""
    return store.lock_holder(services, host)


class Engine:
    """``services.engine``: the module functions as methods (tests may swap in a stand-in)."""

    RUNBOOKS = RUNBOOKS

    def __init__(self, timing: Timing | None = None) -> None:
        self.timing = timing or Timing()

    def get_runbook(self, name: str) -> Runbook:
        return get_runbook(name)

    def validate(
        self,
        services: Services,
        runbook: str,
        host: str,
        raw_params: dict[str, Any],
        *,
        check_lock: bool = True,
    ) -> dict[str, Any]:
        return validate(services, runbook, host, raw_params, check_lock=check_lock)

    def plan(
        self, services: Services, runbook: str, host: str, params: dict[str, Any]
    ) -> list[PlanStep]:
        return plan(services, runbook, host, params)

    def format_plan(self, steps: list[PlanStep]) -> str:
        return format_plan(steps)

    async def execute(
        self, services: Services, job: ExecutionRequest, *, progress: Progress | None = None
    ) -> ExecutionResult:
        return await execute(services, job, progress=progress)

    def lock_holder(self, services: Services, host: str) -> dict[str, Any] | None:
        return lock_holder(services, host)

    def recover_interrupted(self, services: Services) -> list[str]:
        return recover_interrupted(services)
