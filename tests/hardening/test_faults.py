# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Faults injected while the bot works: Slack down or rate limiting, an SSH host dying in the
middle of a step, AWS throttling and no capacity on start, SQLite locked by other writers
(threads and another process), SIGKILL at random points of a runbook, and a full disk under
the database. Each time: nothing lost, nothing done twice, the host lock freed, the audit
chain intact, and a clear one-line error where something could not be done."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from helpers import sshd as ssh
from intake_fixtures import diagnoses, start_bot, top_level, until  # noqa: F401
from runbook_fixtures import Progress, job, make_services, small_tmpfs

from bot.db import Database
from runbooks.engine import RUNBOOKS, execute, lock_holder, recover_interrupted
from runbooks.executors import run_checked
from runbooks.model import PlanStep, Runbook, Step

ROOT = Path(__file__).resolve().parents[2]
FAULTS: dict[str, int] = {}


def injected(name: str, n: int = 1) -> None:
    FAULTS[name] = FAULTS.get(name, 0) + n


def verify_cli(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "stabilize"), "audit", "verify"],
        env={**os.environ, "STABILIZE_DB": str(db)},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- Slack down, then rate limiting ----------------------------------------------------------


async def test_alerts_queue_while_slack_is_down_or_429_and_all_arrive_in_order_once(
    tmp_path, slack_api, settings_factory, agent_signer, diagnoses
):
    server, runner = await start_bot(
        tmp_path, slack_api, settings_factory(), post_interval=0.0, update_interval=0.0
    )
    try:
        hosts = [f"web-{n:02d}" for n in range(30)]
        slack_api.fail_for(3, status=503)  # Slack down …
        injected("Slack API 503 for 3 s")
        for host in hosts[:15]:
            status, _ = await server.post(
                "/alerts/agent", *agent_signer.sign(agent_signer.alert(host=host))
            )
            assert status == 200  # accepted and committed while Slack is down
        await asyncio.sleep(3)
        slack_api.fail_for(4, status=429, retry_after=1)  # … then rate limiting us
        injected("Slack API 429 for 4 s")
        for host in hosts[15:]:
            status, _ = await server.post(
                "/alerts/agent", *agent_signer.sign(agent_signer.alert(host=host))
            )
            assert status == 200
        messages = await until(lambda: len(top_level(slack_api)) >= 30 and top_level(slack_api), 60)
        await asyncio.sleep(1)  # a duplicate would show up now
        posted = top_level(slack_api)
        assert len(posted) == 30, [m["text"] for m in posted]
        # In order: the incident messages appear in the order the alerts were accepted.
        order = [m["text"].split(" ")[0] for m in messages]
        assert order == [f"INC-{n}" for n in range(1, 31)], order
        failed_calls = [c for c in slack_api.calls("chat.postMessage") if c.status != 200]
        assert failed_calls, "the outage was not seen by the bot"
        assert server.services.outbox.pending() == 0
        assert server.services.outbox.failed() == []
        assert len(server.audit("alert.received")) == 30
        assert server.services.audit.verify().ok
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()


# -- SSH host dying mid-step -------------------------------------------------------------------


def _ssh_runbook() -> Runbook:
    def steps(ctx: Any) -> list[Step]:
        return [
            Step("hello", lambda c: c.shell.run("echo hello", timeout=10).stdout, changes=False),
            Step("long", lambda c: run_checked(c.shell, c.host, "sleep 30; echo done", timeout=60)),
        ]

    return Runbook(
        name="test-ssh-long",
        description="test only: a long step over SSH",
        risk="low",
        target="shell",
        params=(),
        plan=lambda target, params: [PlanStep("long", "shell", "sleep 30")],
        steps=steps,
        verify=lambda ctx: "verified",
        rollback=lambda ctx: "nothing to undo",
    )


async def test_an_ssh_host_dying_mid_step_fails_the_run_cleanly(
    settings_factory, tmp_path, monkeypatch
):
    reason = ssh.missing_reason()
    if reason:
        pytest.skip(reason)
    runbook = _ssh_runbook()
    monkeypatch.setitem(RUNBOOKS, runbook.name, runbook)
    with tempfile.TemporaryDirectory(prefix="stabilize-dying-sshd-") as tmp:
        server = ssh.SshServer(Path(tmp)).start()
        try:
            services = make_services(
                settings_factory(hosts={"dying-01": server.host_config()}), tmp_path / "s.db"
            )
            request = job(runbook.name, "dying-01")
            started = time.monotonic()
            run = asyncio.ensure_future(execute(services, request, progress=Progress()))
            await until(
                lambda: services.db.query_one(
                    "SELECT 1 AS x FROM execution_steps WHERE name = 'long' AND state = 'running'"
                ),
                30,
            )
            await asyncio.sleep(0.5)  # the command is running on the host now
            await asyncio.to_thread(server.stop)  # the host goes away: connections and all
            injected("sshd killed mid-step")
            result = await asyncio.wait_for(run, 60)
        finally:
            server.stop()
    assert time.monotonic() - started < 25, "the run waited for the dead host's command"
    assert result.state in ("failed", "rolled_back"), result
    assert result.failed_step == "long"
    assert "lost the ssh connection to dying-01" in (result.error or ""), result
    assert lock_holder(services, "dying-01") is None
    actions = [r["action"] for r in services.audit.list(request_id=request.request_id)]
    assert actions[0] == "execution.started"
    assert actions[-1] in ("execution.failed", "execution.rolled_back")
    assert services.audit.verify().ok
    services.close()


# -- AWS throttling and no capacity --------------------------------------------------------------

AMI = "ami-12c6146b"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def throttle(client: Any, operation: str, times: int) -> list[int]:
    """The next ``times`` calls of ``operation`` get EC2's RequestLimitExceeded (HTTP 503)
    before reaching moto, as AWS answers when throttling; botocore's retries see them."""
    seen = [0]
    body = (
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit"
        b" exceeded.</Message></Error></Errors><RequestID>1</RequestID></Response>"
    )

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        if seen[0] >= times:
            return None
        seen[0] += 1
        injected(f"AWS throttling on {operation}")
        return AWSResponse(request.url, 503, {}, _Raw(body))

    client.meta.events.register(f"before-send.ec2.{operation}", answer)
    return seen


@pytest.fixture
def instance(aws_env) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    out = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.medium")
    return out["Instances"][0]["InstanceId"]


def _instance(instance_id: str) -> dict:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


async def test_aws_throttling_is_retried_and_each_change_reaches_aws_once(
    aws_env, instance, settings_factory, tmp_path
):
    services = make_services(
        settings_factory(hosts={"prod-web-01": {"instance_id": instance}}), tmp_path / "s.db"
    )
    ec2 = services.aws("ec2")
    counters = [
        throttle(ec2, op, 2)
        for op in ("StopInstances", "ModifyInstanceAttribute", "StartInstances")
    ]
    aws_env.clear_requests()
    result = await execute(services, job("resize-instance", "prod-web-01", type="t3.large"))
    assert result.ok, result.error
    assert [c[0] for c in counters] == [2, 2, 2]
    assert _instance(instance)["InstanceType"] == "t3.large"
    # Throttled attempts never reached AWS: each change arrived exactly once.
    assert aws_env.count(action="StopInstances") == 1
    assert aws_env.count(action="ModifyInstanceAttribute") == 1
    assert aws_env.count(action="StartInstances") == 1
    assert services.audit.verify().ok
    services.close()


@pytest.mark.parametrize("fault", ["InsufficientInstanceCapacity", "throttled past retries"])
async def test_a_start_that_fails_rolls_back_to_the_old_type_running(
    aws_env, instance, settings_factory, tmp_path, fault
):
    services = make_services(
        settings_factory(hosts={"prod-web-01": {"instance_id": instance}}), tmp_path / "s.db"
    )
    ec2 = services.aws("ec2")
    starts = [0]

    def no_capacity(params: dict, **_: Any) -> None:
        starts[0] += 1
        if starts[0] == 1:  # the start on the new type; the rollback's start may succeed
            injected("InsufficientInstanceCapacity on StartInstances")
            raise ClientError(
                {
                    "Error": {
                        "Code": "InsufficientInstanceCapacity",
                        "Message": "We currently do not have sufficient t3.large capacity",
                    }
                },
                "StartInstances",
            )

    if fault == "InsufficientInstanceCapacity":
        ec2.meta.events.register("provide-client-params.ec2.StartInstances", no_capacity)
    else:  # botocore makes 3 attempts: all three of the first start are throttled
        throttle(ec2, "StartInstances", 3)
    throttle(ec2, "DescribeInstances", 2)  # and the reads are throttled too, within retries
    request = job("resize-instance", "prod-web-01", type="t3.large")
    result = await execute(services, request)
    assert result.state == "rolled_back", (result.state, result.error)
    assert ("RequestLimitExceeded" if "throttled" in fault else fault) in (result.error or "")
    current = _instance(instance)
    assert current["InstanceType"] == "t3.medium"
    assert current["State"]["Name"] == "running"
    assert lock_holder(services, "prod-web-01") is None
    assert services.audit.list(request_id=request.request_id)[-1]["action"] == (
        "execution.rolled_back"
    )
    assert services.audit.verify().ok
    services.close()


# -- SQLite busy: other writers hammering the database -------------------------------------------

_HAMMER = """
import sqlite3, sys, time
sys.path.insert(0, {root!r})
from bot.audit import AuditLog
from bot.db import Database
db = Database({db!r})
audit = AuditLog(db)
end = time.time() + {seconds!r}
n = 0
while time.time() < end:
    with db.transaction() as tx:
        audit.append("system", "input.rejected", detail={{"hammer": n}}, conn=tx)
        time.sleep(0.01)  # hold the write lock a while
    n += 1
    time.sleep(0.005)
print(n)
"""


async def test_alerts_are_all_stored_while_threads_and_a_process_hold_the_write_lock(
    tmp_path, slack_api, settings_factory, agent_signer, diagnoses
):
    server, runner = await start_bot(tmp_path, slack_api, settings_factory())
    db_file = tmp_path / "bot.db"
    seconds = 4.0
    hammer = subprocess.Popen(
        [sys.executable, "-c", _HAMMER.format(root=str(ROOT), db=str(db_file), seconds=seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    thread_writes = [0]

    def writer() -> None:
        db = Database(db_file)
        from bot.audit import AuditLog

        audit = AuditLog(db)
        while not stop.is_set():
            with db.transaction() as tx:
                audit.append("system", "input.rejected", detail={"thread": 1}, conn=tx)
                time.sleep(0.005)
            thread_writes[0] += 1
            time.sleep(0.005)
        db.close()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    injected("SQLite writers: 3 threads + 1 process holding the write lock", 4)
    try:
        sent = 0
        deadline = time.monotonic() + seconds
        n = 0
        retried = 0
        while time.monotonic() < deadline:
            alert = agent_signer.alert(host=f"busy-{n % 5}", summary=f"busy #{n}")
            while True:  # like the agent: a 503 (database busy) is retried, nothing else
                status, answer = await server.post("/alerts/agent", *agent_signer.sign(alert))
                if status == 200:
                    break
                assert status == 503 and "retry" in answer["error"], (status, answer)
                retried += 1
                await asyncio.sleep(0.1)
            sent += 1
            n += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        hammer_writes = int(hammer.communicate(timeout=60)[0].strip() or 0)
    writes = (sent, hammer_writes, thread_writes[0])
    assert all(w > 0 for w in writes), writes  # everybody got the lock in turn
    summaries = [r["summary"] for r in server.services.db.query("SELECT summary FROM alerts")]
    assert len(summaries) == sent and len(set(summaries)) == sent, (sent, retried)
    received = len(server.audit("alert.received")) + len(server.audit("alert.deduplicated"))
    assert received == sent
    assert server.services.audit.verify().ok
    await server.session.close()
    await runner.cleanup()
    server.services.close()
    assert verify_cli(db_file).returncode == 0


# -- SIGKILL at random points of a runbook ---------------------------------------------------------

_RUNNER = """
import asyncio, random, sys, time
sys.path.insert(0, {tests!r})
from runbook_fixtures import make_services
from bot.config import parse_settings
from runbooks.executors import run_checked
from runbooks.engine import RUNBOOKS, ExecutionRequest, execute
from runbooks.model import PlanStep, Runbook, Step

def pause(c, s):
    time.sleep(s)
    return f"slept {{s}}"

rng = random.Random({seed!r})
def steps(ctx):
    return [Step(f"s{{n}}", lambda c, s=rng.uniform(0.05, 0.25): pause(c, s)) for n in range(6)]

RUNBOOKS["test-steps"] = Runbook(
    name="test-steps", description="test only", risk="low", target="shell", params=(),
    plan=lambda t, p: [PlanStep("s", "note", "sleep")], steps=steps,
    verify=lambda ctx: "verified", rollback=lambda ctx: "undone",
)
services = make_services(parse_settings({settings!r}), {db!r})
job = ExecutionRequest({request_id!r}, "test-steps", {host!r}, {{}}, "U0ALICE", None)
print("ready", flush=True)
asyncio.run(execute(services, job))
print("finished", flush=True)
"""


def test_sigkill_at_random_points_of_a_runbook_is_recovered_every_time(
    sshd, settings_factory, tmp_path
):
    settings = settings_factory(hosts={"prod-web-01": sshd.host_config()})
    db = tmp_path / "s.db"
    services = make_services(settings, db)
    rng = random.Random(8)
    outcomes = []
    for n in range(6):
        request_id = f"R-kill{n:06d}"
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RUNNER.format(
                    tests=str(ROOT / "tests"),
                    seed=n,
                    settings=settings.model_dump(mode="json"),
                    db=str(db),
                    request_id=request_id,
                    host="prod-web-01",
                ),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.4))  # six steps of 0.05–0.25 s: anywhere in the run
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            injected("SIGKILL of a running runbook")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        recovered = recover_interrupted(services)
        actions = [r["action"] for r in services.audit.list(request_id=request_id)]
        if recovered:
            assert recovered == [request_id]
            assert actions[-1] == "execution.interrupted"
            outcomes.append("interrupted")
        else:  # killed before the run began or after it finished: nothing left running
            assert not actions or actions[-1] != "execution.started"
            outcomes.append(actions[-1] if actions else "not started")
        assert recover_interrupted(services) == []
        assert lock_holder(services, "prod-web-01") is None
        assert services.db.query("SELECT * FROM executions WHERE state = 'running'") == []
        assert services.audit.verify().ok
    assert "interrupted" in outcomes, outcomes
    done = verify_cli(db)
    assert done.returncode == 0, done.stdout + done.stderr
    services.close()


# -- the disk under the database fills up ---------------------------------------------------------


async def test_a_full_disk_gives_a_clear_error_and_leaves_the_chain_intact(
    tmp_path, slack_api, settings_factory, agent_signer, diagnoses
):
    with small_tmpfs("4M") as folder:
        db_file = folder / "bot.db"
        server, runner = await start_bot(folder, slack_api, settings_factory())
        try:
            ok = 0
            for n in range(5):
                body = agent_signer.sign(agent_signer.alert(host=f"disk-{n}"))
                status, _ = await server.post("/alerts/agent", *body)
                ok += status == 200
            assert ok == 5
            # Fill the disk, leaving a few pages free.
            filler = folder / "filler"
            with open(filler, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            injected("disk full under the database")
            answers = []
            for n in range(40):
                alert = agent_signer.alert(host=f"full-{n}", summary="x" * 400)
                status, answer = await server.post("/alerts/agent", *agent_signer.sign(alert))
                answers.append((status, answer))
            refused = [a for s, a in answers if s != 200]
            assert refused, "the disk never filled up"
            assert {s for s, _ in answers} <= {200, 503}, answers
            assert all("retry" in a["error"] for a in refused), refused
            accepted = sum(1 for s, _ in answers if s == 200)
            assert server.services.audit.verify().ok
            # Space again: the bot carries on where it stopped, nothing half-written.
            filler.unlink()
            status, _ = await server.post(
                "/alerts/agent", *agent_signer.sign(agent_signer.alert(host="after-full"))
            )
            assert status == 200
            stored = server.services.db.query_one("SELECT count(*) AS n FROM alerts")["n"]
            assert stored == 5 + accepted + 1
            assert server.services.audit.verify().ok
        finally:
            await server.session.close()
            await runner.cleanup()
            server.services.close()
        done = verify_cli(db_file)
        assert done.returncode == 0, done.stdout + done.stderr
