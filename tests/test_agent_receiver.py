"""A stand-in for the bot's ``/alerts/agent`` that checks the HMAC exactly as the contract
says, plus helpers to run the real agent as a subprocess against prepared /proc files.

The agent tests import from here (``from test_agent_receiver import …``); the tests in this
file show the stand-in refuses what the bot must refuse, so passing agent tests mean the
agent signs correctly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import free_port, stop_process, wait_until
from helpers.signers import DEFAULT_WEBHOOK_TOKEN, AgentSigner

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = Path(__file__).resolve().parent / "payloads" / "agent"
KINDS = {
    "oom_kill",
    "memory_pressure",
    "swap_exhausted",
    "cpu_high",
    "disk_full",
    "service_down",
    "custom",
}
SEVERITIES = {"critical", "warning", "info"}
WINDOW = 300  # seconds a signature stays valid


class Receiver:
    """``/alerts/agent`` on 127.0.0.1: verifies ``X-Stabilize-Signature`` (``sha256=`` + hex
    HMAC-SHA256 of ``v1:<timestamp>:<body>``) and the timestamp window, validates the body,
    records what it accepted. Can be stopped and started again on the same port."""

    def __init__(self, token: str = DEFAULT_WEBHOOK_TOKEN, port: int | None = None) -> None:
        self.token = token
        self.port = port or free_port()
        self.refuse: Callable[[dict[str, Any]], int | None] = lambda body: None
        self._accepted: list[dict[str, Any]] = []
        self._answers: list[int] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The bot's base URL; the agent adds /alerts/agent."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def serve() -> None:
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_post("/alerts/agent", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def _answer(self, status: int, reason: str = "") -> web.Response:
        with self._lock:
            self._answers.append(status)
        return web.json_response({"ok": status == 200, "error": reason or None}, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = request.headers.get("X-Stabilize-Timestamp", "")
        signature = request.headers.get("X-Stabilize-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > WINDOW:
            return self._answer(401, "stale or missing timestamp")
        base = b"v1:" + timestamp.encode() + b":" + raw
        expected = "sha256=" + hmac.new(self.token.encode(), base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return self._answer(401, "bad signature")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(400, "body is not JSON")
        problem = validate(body)
        if problem:
            return self._answer(400, problem)
        status = self.refuse(body)
        if status:
            return self._answer(status, "refused by the test")
        with self._lock:
            self._accepted.append(body)
        return self._answer(200)

    def alerts(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Accepted alerts in arrival order, without the agent's start-up hello."""
        with self._lock:
            out = [a for a in self._accepted if not is_hello(a)]
        return [a for a in out if kind is None or a["kind"] == kind]

    def hellos(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self._accepted if is_hello(a)]

    def answers(self) -> list[int]:
        with self._lock:
            return list(self._answers)

    def wait_for(self, kind: str | None = None, count: int = 1, timeout: float = 15.0) -> list:
        wait_until(lambda: len(self.alerts(kind)) >= count, timeout=timeout)
        return self.alerts(kind)


def validate(body: Any) -> str | None:
    """The contract's shape of an agent alert; a reason when it is not."""
    if not isinstance(body, dict):
        return "body is not an object"
    extra = set(body) - {"host", "kind", "severity", "summary", "details", "resolved"}
    if extra:
        return f"unknown keys {sorted(extra)}"
    if not isinstance(body.get("host"), str) or not body["host"]:
        return "host missing"
    if body.get("kind") not in KINDS:
        return f"unknown kind {body.get('kind')!r}"
    if body.get("severity") not in SEVERITIES:
        return f"unknown severity {body.get('severity')!r}"
    if not isinstance(body.get("summary"), str) or not body["summary"]:
        return "summary missing"
    if not isinstance(body.get("details"), dict):
        return "details is not an object"
    if "resolved" in body and not isinstance(body["resolved"], bool):
        return "resolved is not a boolean"
    return None


def is_hello(alert: dict[str, Any]) -> bool:
    return alert["kind"] == "custom" and alert["details"].get("hello") is True


# -- running the agent -------------------------------------------------------------------


class AgentProcess:
    """``python -S -m bot.agent …`` as a child (``-S``: no site-packages, so the agent runs
    on the standard library alone, as on a box where pip cannot run); its log goes to a
    file the test can read."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-m", "bot.agent", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 15.0) -> str:
        def seen() -> str | None:
            if self.proc.poll() is not None and text not in self.log():
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log()}")
            return self.log() if text in self.log() else None

        return wait_until(seen, timeout=timeout)

    def stop(self) -> int | None:
        status = stop_process(self.proc, timeout=5)
        self._log.close()
        return status


def agent_env(token: str = DEFAULT_WEBHOOK_TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["STABILIZE_WEBHOOK_TOKEN"] = token
    return env


class Box:
    """A prepared host in tmp_path: ``proc/`` (copied from the payloads), ``kern.log`` and
    the spool directory. Methods change the box the way a sick host would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        shutil.copytree(PAYLOADS / "proc", self.proc)
        self.kern_log = root / "kern.log"
        self.kern_log.write_text(
            "[1234500.000001] EXT4-fs (nvme0n1p1): re-mounted. Opts: discard,errors=remount-ro\n"
        )
        self.spool = root / "spool"

    def pressure(self, high: bool) -> None:
        source = PAYLOADS / "pressure-memory-high" if high else PAYLOADS / "proc/pressure/memory"
        replace_file(self.proc / "pressure" / "memory", source.read_text())

    def meminfo(self, name: str) -> None:
        text = (PAYLOADS / name if name != "normal" else PAYLOADS / "proc/meminfo").read_text()
        replace_file(self.proc / "meminfo", text)

    def oom(self, name: str) -> None:
        """Append the OOM report ``kernel/<name>`` to the kernel log, as the kernel does."""
        with open(self.kern_log, "a") as fh:
            fh.write((PAYLOADS / "kernel" / name).read_text())

    def oom_kill(self, pid: int, victim: str, anon_kb: int = 524288) -> None:
        """One kill in the 5.15 format, for tests that need several distinct ones."""
        t = 1234600 + pid / 1000
        with open(self.kern_log, "a") as fh:
            fh.write(
                f"[{t:.6f}] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,"
                f"mems_allowed=0,global_oom,task_memcg=/system.slice/{victim}.service,"
                f"task={victim},pid={pid},uid=1000\n"
                f"[{t + 0.00005:.6f}] Out of memory: Killed process {pid} ({victim}) "
                f"total-vm:{anon_kb * 2}kB, anon-rss:{anon_kb}kB, file-rss:0kB, shmem-rss:0kB, "
                f"UID:1000 pgtables:1024kB oom_score_adj:0\n"
            )

    def spooled(self) -> list[Path]:
        """Alerts waiting in the spool (``<seq>.json``), oldest first."""
        if not self.spool.exists():
            return []
        return sorted(p for p in self.spool.glob("*.json") if p.stem.isdigit())


def replace_file(path: Path, text: str) -> None:
    """Swap a file's content at once, as the kernel's /proc files never show half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run_agent(tmp_path: Path, box: Box) -> Iterator[Callable[..., AgentProcess]]:
    """``run_agent(url, *extra_args, token=…)`` starts the agent watching ``box``, fast:
    0.2 s interval, short hold/clear and retry cap. Every one started is stopped."""
    started: list[AgentProcess] = []

    def start(url: str, *extra: str, token: str = DEFAULT_WEBHOOK_TOKEN) -> AgentProcess:
        args = [
            "--url", url, "--host", "prod-web-01",
            "--proc-root", str(box.proc), "--kernel-log", str(box.kern_log),
            "--spool", str(box.spool), "--interval", "200ms",
            "--hold", "600ms", "--clear", "600ms", "--retry-max", "500ms",
            "--disk-free", "0", *extra,
        ]  # fmt: skip
        agent = AgentProcess(args, agent_env(token), tmp_path / f"agent-{len(started)}.log")
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.stop()


# -- the stand-in itself -----------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_receiver_accepts_what_the_contract_signs(receiver, agent_signer):
    body, headers = agent_signer.sign(agent_signer.alert(kind="oom_kill", details={"victim": "x"}))
    assert _post(receiver.url + "/alerts/agent", body, headers) == 200
    assert receiver.alerts("oom_kill")[0]["details"] == {"victim": "x"}


def test_receiver_refuses_a_wrong_key_a_stale_timestamp_and_a_changed_body(receiver):
    url = receiver.url + "/alerts/agent"
    wrong = AgentSigner("not-the-key")
    body, headers = wrong.sign(wrong.alert())
    assert _post(url, body, headers) == 401
    right = AgentSigner()
    body, headers = right.sign(right.alert(), age=WINDOW + 60)
    assert _post(url, body, headers) == 401
    body, headers = right.sign(right.alert())
    assert _post(url, body.replace(b"oom_kill", b"cpu_high"), headers) == 401
    assert receiver.alerts() == []
