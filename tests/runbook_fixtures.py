"""Helpers for the runbook tests: services with a fast engine, swap probes, a small tmpfs.

Import as ``from runbook_fixtures import …`` (conftest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Secrets, Settings
from bot.services import Services, build_services
from runbooks.engine import Engine, ExecutionRequest
from runbooks.model import Timing

# Waiters poll moto every 50 ms; nothing here is a speed assertion, only a bound.
FAST = Timing(
    step_timeout=120,
    command_timeout=60,
    waiter_delay=0.05,
    waiter_max_attempts=100,
    poll_interval=0.05,
    asg_wait=30,
)


def make_services(settings: Settings, db_file: Path, *, dry_run: bool = False) -> Services:
    services = build_services(settings, Secrets(), db_file, slack=False, dry_run=dry_run)
    services.engine = Engine(timing=FAST)
    return services


def job(runbook: str, host: str, **params: Any) -> ExecutionRequest:
    return ExecutionRequest(
        request_id=f"R-{uuid.uuid4().hex[:10]}",
        runbook=runbook,
        host=host,
        params={k: str(v) for k, v in params.items()},
        requested_by="U0ALICE",
        incident_id=None,
    )


class Progress:
    """Collects what the engine would post in the request's Slack thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, text: str) -> None:
        self.lines.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def actions(services: Services, request_id: str) -> list[str]:
    return [r["action"] for r in services.audit.list(request_id=request_id)]


# -- swap --------------------------------------------------------------------------------


def active_swaps() -> list[str]:
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    return [line.split()[0] for line in lines if line.strip()]


def swapon_permitted() -> str | None:
    """None when this machine lets us turn a swap file on; else why not (for a skip)."""
    if os.geteuid() != 0:
        return "needs root to swapon"
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        probe = Path(tmp) / "probe"
        try:
            subprocess.run(["fallocate", "-l", "1M", str(probe)], check=True, capture_output=True)
            probe.chmod(0o600)
            subprocess.run(["mkswap", str(probe)], check=True, capture_output=True)
            done = subprocess.run(["swapon", str(probe)], capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"cannot prepare a swap probe: {exc}"
        if done.returncode != 0:
            return f"swapon is not permitted here: {done.stderr.strip()}"
        subprocess.run(["swapoff", str(probe)], capture_output=True)
    return None


def swap_cleanup(path: Path) -> None:
    """Whatever a test did: swap off and file gone."""
    if str(path) in active_swaps():
        subprocess.run(["swapoff", str(path)], capture_output=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` on a temp folder (root only); tmpfs also refuses swap files."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp(prefix="stabilize-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        for child in folder.iterdir():
            swap_cleanup(child)
        subprocess.run(["umount", str(folder)], capture_output=True)
        folder.rmdir()


# -- a runbook whose second step blocks (for kill -9 tests) --------------------------------


def _blocking_runbook(seconds: float) -> Any:
    import time

    from runbooks.model import PlanStep, Runbook, Step

    def steps(ctx: Any) -> list[Step]:
        return [
            Step("prepare", lambda c: "ready", changes=False),
            Step("block", lambda c: time.sleep(seconds) or "woke up"),
        ]

    return Runbook(
        name="test-block",
        description="test only: a step that sleeps",
        risk="low",
        target="shell",
        params=(),
        plan=lambda target, params: [PlanStep("block", "note", f"sleep {seconds}s")],
        steps=steps,
        verify=lambda ctx: "verified",
        rollback=lambda ctx: "undone",
    )


def register_blocking_runbook(monkeypatch: Any | None = None, seconds: float = 600) -> str:
    """Add ``test-block`` to the engine's registry (via monkeypatch when given)."""
    from runbooks.engine import RUNBOOKS

    runbook = _blocking_runbook(seconds)
    if monkeypatch is not None:
        monkeypatch.setitem(RUNBOOKS, runbook.name, runbook)
    else:
        RUNBOOKS[runbook.name] = runbook
    return runbook.name
