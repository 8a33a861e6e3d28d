"""The shapes the engine and the runbooks share: a runbook's declaration, its plan, its steps,
the request to run it and the result.

A runbook is metadata (name, description, risk, target kind, typed parameters) plus four
functions: ``check`` (validation that needs the target, e.g. the AWS API), ``plan`` (exact
commands and API calls, no I/O), ``steps`` (what ``execute`` runs), ``verify`` and ``rollback``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.config import HostSettings
from runbooks.params import Param

if TYPE_CHECKING:
    from bot.services import Services
    from runbooks.executors import Executor
    from runbooks.executors.aws import AwsExecutor

Risk = Literal["low", "medium", "high"]
# shell: needs a way to run commands (ssh, or ssm with an instance_id); instance: instance_id;
# asg: an Auto Scaling Group name.
TargetKind = Literal["shell", "instance", "asg"]
State = Literal["succeeded", "failed", "rolled_back", "refused", "dry_run", "interrupted"]


@dataclass(frozen=True)
class Timing:
    """How long steps may take and how often waiters poll. Tests use tiny delays with moto."""

    step_timeout: float = 600.0
    command_timeout: float = 300.0
    waiter_delay: float = 15.0
    waiter_max_attempts: int = 40
    poll_interval: float = 5.0
    asg_wait: float = 900.0


@dataclass(frozen=True)
class PlanStep:
    """One line of a plan: ``kind`` is ``shell`` (the exact command) or ``aws`` (the call)."""

    name: str
    kind: Literal["shell", "aws", "check", "note"]
    text: str
    on_failure: bool = False  # part of the rollback, shown after the main steps


@dataclass
class Target:
    """What validation and planning know about the host."""

    services: Services
    name: str
    host: HostSettings

    @property
    def settings(self) -> Any:
        return self.services.settings


@dataclass
class RunContext:
    """Everything a step gets. ``state`` carries facts between steps and into the rollback."""

    services: Services
    request_id: str
    host_name: str
    host: HostSettings
    params: dict[str, Any]
    timing: Timing
    shell: Executor | None = None
    aws: AwsExecutor | None = None
    state: dict[str, Any] = field(default_factory=dict)
    # Set once a step that changes the host has started: from then on a failure rolls back.
    changed: bool = False


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[RunContext], str]  # returns a short output summary; raises on failure
    changes: bool = True  # False for read-only steps (preflight): no rollback needed
    timeout: float | None = None  # None: Timing.step_timeout


class AlreadyDone(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a preflight when the host is already as asked: report, change nothing."""


class Refused(Exception):  # noqa: N818
    """Raised by a preflight that finds the host unfit (one line that names the fix)."""


@dataclass(frozen=True)
class Runbook:
    name: str
    description: str
    risk: Risk
    target: TargetKind
    params: tuple[Param, ...]
    plan: Callable[[Target, dict[str, Any]], list[PlanStep]]
    steps: Callable[[RunContext], list[Step]]
    verify: Callable[[RunContext], str]
    rollback: Callable[[RunContext], str]
    check: Callable[[Target, dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class ExecutionRequest:
    request_id: str
    runbook: str
    host: str
    params: dict[str, Any]
    requested_by: str
    incident_id: str | int | None = None


@dataclass
class StepResult:
    name: str
    ok: bool
    duration: float
    output: str = ""


@dataclass
class ExecutionResult:
    ok: bool
    state: State
    request_id: str = ""
    runbook: str = ""
    host: str = ""
    failed_step: str | None = None
    error: str | None = None
    summary: str = ""
    steps: list[StepResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "state": self.state,
            "request_id": self.request_id,
            "runbook": self.runbook,
            "host": self.host,
            "failed_step": self.failed_step,
            "error": self.error,
            "summary": self.summary,
            "steps": [s.__dict__ for s in self.steps],
        }
