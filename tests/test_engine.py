"""The engine's promises: one runbook per host, one run per request, dry runs touch nothing,
steps time out, every outcome is audited, and a run killed mid-way is reported interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until
from runbook_fixtures import (
    Progress,
    actions,
    job,
    make_services,
    register_blocking_runbook,
)

from bot.errors import InputError
from bot.services import build_services
from runbooks.engine import (
    Engine,
    ExecutionRequest,
    execute,
    lock_holder,
    recover_interrupted,
    validate,
)
from runbooks.model import Timing

HOST = "prod-web-01"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def services(sshd, settings_factory, tmp_path):
    svc = make_services(settings_factory(hosts={HOST: sshd.host_config()}), tmp_path / "s.db")
    yield svc
    svc.close()


def _missing_folder_job(tmp_path) -> ExecutionRequest:
    # Fails fast at the preflight without changing anything: handy to exercise the engine.
    return job(
        "add-swap", HOST, size="1G", path=tmp_path / "nope" / "swap", fstab=tmp_path / "fstab"
    )


async def test_a_busy_host_is_refused_naming_who_holds_it(services, tmp_path):
    first = _missing_folder_job(tmp_path)
    services.audit.append("U0BOB", "request.approved", host=HOST, request_id=first.request_id)
    seen: list = []
    busy_request_error: list[str] = []

    async def meanwhile(text: str) -> None:
        if not seen:  # while the first run holds the lock, a second one is asked for
            seen.append(await execute(services, _missing_folder_job(tmp_path)))
            try:
                validate(services, "add-swap", HOST, {"size": "2G"})
            except InputError as exc:
                busy_request_error.append(str(exc))

    await execute(services, first, progress=meanwhile)
    second = seen[0]
    assert second.state == "refused" and not second.ok
    assert second.error.startswith(f"{HOST} is busy: add-swap {first.request_id} approved by U0BOB")
    assert " since " in second.error
    assert lock_holder(services, HOST) is None  # released after the first run
    # Asking for another runbook while the host is busy is refused the same way.
    assert busy_request_error[0].startswith(f"{HOST} is busy: add-swap {first.request_id}")
    refusal = services.audit.list(request_id=second.request_id)
    assert [r["action"] for r in refusal] == ["execution.failed"]
    assert json.loads(refusal[0]["detail"])["refused"] is True


async def test_a_request_runs_at_most_once(services, tmp_path):
    request = _missing_folder_job(tmp_path)
    await execute(services, request)
    again = await execute(services, request)
    assert again.state == "refused"
    assert "already run" in again.error
    assert actions(services, request.request_id).count("execution.started") == 1


async def test_dry_run_posts_the_plan_and_runs_nothing(sshd, settings_factory, tmp_path):
    svc = make_services(
        settings_factory(hosts={HOST: sshd.host_config()}), tmp_path / "s.db", dry_run=True
    )
    mark = sshd.mark()
    progress = Progress()
    path = tmp_path / "swapfile"
    result = await execute(svc, job("add-swap", HOST, size="2G", path=path), progress=progress)

    assert result.ok and result.state == "dry_run"
    assert "Dry run" in progress.text and f"swapon {path}" in progress.text
    assert f"mkswap {path}" in result.summary
    assert not path.exists()
    assert sshd.connections(mark) == 0
    assert lock_holder(svc, HOST) is None
    svc.close()


async def test_bad_input_at_run_time_is_refused_and_audited(services):
    result = await execute(services, job("add-swap", "ghost-host", size="1G"))
    assert result.state == "refused"
    assert "unknown host 'ghost-host'" in result.error
    result = await execute(services, job("add-swap", HOST, size="1T"))
    assert result.error == "size=1T is out of bounds: use 1G to 64G"


async def test_a_step_that_overruns_its_timeout_fails_and_is_rolled_back(services, monkeypatch):
    name = register_blocking_runbook(monkeypatch, seconds=1.0)
    services.engine = Engine(timing=Timing(step_timeout=0.1))
    result = await execute(services, job(name, HOST))
    assert result.state == "rolled_back"
    assert result.failed_step == "block"
    assert "timed out after" in result.error
    assert lock_holder(services, HOST) is None


async def test_a_failing_progress_callback_does_not_stop_the_run(services, tmp_path):
    async def broken(text: str) -> None:
        raise RuntimeError("slack is down")

    result = await execute(services, _missing_folder_job(tmp_path), progress=broken)
    assert result.failed_step == "preflight"  # ran to its real end


def test_services_get_the_real_engine(settings_factory, tmp_path):
    from bot.config import Secrets

    svc = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    assert isinstance(svc.engine, Engine)
    assert sorted(svc.engine.RUNBOOKS) == ["add-swap", "resize-instance", "scale-asg"]
    svc.close()


_CHILD = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from runbook_fixtures import make_services, register_blocking_runbook
from bot.config import parse_settings
from runbooks.engine import ExecutionRequest, execute
settings = parse_settings({settings!r})
services = make_services(settings, {db!r})
name = register_blocking_runbook()
job = ExecutionRequest({request_id!r}, name, {host!r}, {{}}, "U0ALICE", "7")
asyncio.run(execute(services, job))
"""


def test_a_run_killed_mid_way_is_reported_interrupted_and_frees_the_host(
    sshd, settings_factory, tmp_path
):
    settings = settings_factory(hosts={HOST: sshd.host_config()})
    db = tmp_path / "s.db"
    services = make_services(settings, db)
    request_id = "R-killed01"
    # The request's Slack message exists (queued), so the recovery can answer in its thread.
    services.outbox.post(f"request:{request_id}", "C0ALERTS", "approval request")
    script = _CHILD.format(
        tests=str(ROOT / "tests"),
        settings=settings.model_dump(mode="json"),
        db=str(db),
        request_id=request_id,
        host=HOST,
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    try:
        wait_until(
            lambda: services.db.query_one(
                "SELECT 1 AS x FROM execution_steps WHERE name = 'block' AND state = 'running'"
            ),
            timeout=60,
        )
        assert lock_holder(services, HOST)["request_id"] == request_id
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert recover_interrupted(services) == [request_id]
    assert recover_interrupted(services) == []  # never twice, never retried
    assert lock_holder(services, HOST) is None
    trail = services.audit.list(request_id=request_id)
    assert [r["action"] for r in trail][-1] == "execution.interrupted"
    assert trail[-1]["incident_id"] == "7"
    assert "step 2 (block)" in json.loads(trail[-1]["detail"])["at"]
    queued = services.db.query_one(
        "SELECT channel, thread_key, text FROM outbox WHERE key = ?",
        (f"request:{request_id}:interrupted",),
    )
    assert queued["thread_key"] == f"request:{request_id}"
    assert "interrupted during step 2 (block)" in queued["text"]
    assert "not be retried" in queued["text"]

    verify = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "stabilize"), "audit", "verify"],
        env={**os.environ, "STABILIZE_DB": str(db)},
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    assert "intact" in verify.stdout
    # The host takes a new request again.
    after = asyncio.run(execute(services, _missing_folder_job(tmp_path)))
    assert after.state == "failed" and after.failed_step == "preflight"
    services.close()


async def test_a_cancelled_run_frees_the_host_and_is_audited_interrupted(services, monkeypatch):
    name = register_blocking_runbook(monkeypatch, seconds=0.5)
    request = job(name, HOST)
    task = asyncio.ensure_future(execute(services, request))

    async def blocked() -> None:
        while not services.db.query_one(
            "SELECT 1 AS x FROM execution_steps WHERE name = 'block' AND state = 'running'"
        ):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(blocked(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lock_holder(services, HOST) is None
    assert actions(services, request.request_id)[-1] == "execution.interrupted"
    assert recover_interrupted(services) == []


async def test_serving_recovers_a_run_left_by_a_dead_process_at_start_up(services):
    from aiohttp.test_utils import TestServer

    from bot.server import build_web_app
    from runbooks import store

    request = job("add-swap", HOST, size="1G")
    store.begin(services, request, {"size": "1G"}, "running")
    # As if written by a bot in another container that is gone now.
    with services.db.transaction() as tx:
        tx.execute(
            "UPDATE executions SET node = 'old-container/boot' WHERE request_id = ?",
            (request.request_id,),
        )
    assert lock_holder(services, HOST) is not None

    server = TestServer(build_web_app(services), host="127.0.0.1")
    await server.start_server()
    try:

        async def freed() -> None:
            while lock_holder(services, HOST) is not None:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(freed(), timeout=30)
    finally:
        await server.close()
    assert actions(services, request.request_id)[-1] == "execution.interrupted"
