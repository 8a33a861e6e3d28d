"""SSH facts: one read-only POSIX sh command, one round trip, parsed here.

The command prints sections between ``@@stabilize:<name>@@`` markers; ``bot.facts_parse``
turns each section into facts. A runner decides where the command runs: ``SshRunner``
(fabric, one connection, the host's port/user/key/gateway, every paramiko timeout set) or
``LocalRunner`` (this machine, for ``stabilize demo``).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.config import SshTarget
from bot.errors import ConfigError
from bot.ssh import connection, host_key_problem, run_bounded

if TYPE_CHECKING:
    from bot.facts import Facts, HostTarget
    from bot.services import Services

log = logging.getLogger(__name__)

# How long the command may run once connected. A box that is swapping hard can be slow.
COMMAND_TIMEOUT = 30.0
MARKER = "@@stabilize:"

# Read-only. Every section runs even if an earlier one fails; stderr of a section goes into
# the section so a failure can be named. Processes come last and largest first, so output cut
# short (SSM keeps 24,000 characters) loses only the smallest; busybox ps has no --sort.
SCRIPT = r"""
LC_ALL=C; export LC_ALL
PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"
m() { echo "@@stabilize:$1@@"; }
m now; date +%s
m uname; uname -sr 2>&1
for f in meminfo swaps loadavg uptime; do m "$f"; cat "/proc/$f" 2>&1; done
m nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>&1
m df; df -Pk / 2>&1
m kernel
j=""
if command -v journalctl >/dev/null 2>&1; then
  j=$(journalctl -k --since '-24h' -o short-iso --no-pager -q 2>/dev/null)
fi
if [ -n "$j" ]; then
  echo "source journalctl"
  printf '%s\n' "$j" | grep -iE 'killed process' | tail -n 200
elif d=$(dmesg 2>&1); then
  echo "source dmesg"
  printf '%s\n' "$d" | grep -iE 'killed process' | tail -n 200
else
  echo "unavailable $(printf '%s' "$d" | head -n 1)"
fi
m ps; ps -eo pid=,rss=,comm= --sort=-rss 2>/dev/null || ps -eo pid=,rss=,comm= 2>&1
m end
"""


def command() -> str:
    """The one command sent to a host: the script under ``sh``, whatever the login shell."""
    return "sh -c " + shlex.quote(SCRIPT)


@dataclass(frozen=True)
class RunResult:
    stdout: str
    exit_code: int
    timed_out: bool = False  # the command ran over its time; stdout is what came before


class GatherError(Exception):
    """Running the command failed; ``kind`` is timeout / refused / auth / hostkey / error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Runner(Protocol):
    label: str

    async def run(self, command: str) -> RunResult: ...


class LocalRunner:
    """Runs the command on this machine (``stabilize demo``: no SSH needed)."""

    label = "this machine, local runner"

    def __init__(self, timeout: float = COMMAND_TIMEOUT) -> None:
        self.timeout = timeout

    async def run(self, command: str) -> RunResult:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise GatherError("timeout", f"the local command ran over {self.timeout:g}s") from None
        return RunResult(out.decode("utf-8", "replace"), proc.returncode or 0)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """Fabric blocks; a fleet of hosts needs more threads than asyncio's default pool."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="stabilize-ssh")
        return _pool


def _where(t: SshTarget) -> str:
    return f"{t.user + '@' if t.user else ''}{t.host}:{t.port}"


class SshRunner:
    """One fabric connection per run, every phase bounded by ``connect_timeout``."""

    def __init__(
        self,
        target: SshTarget,
        *,
        connect_timeout: float,
        gateway: SshTarget | None = None,
        command_timeout: float = COMMAND_TIMEOUT,
        known_hosts: str | None = None,
    ) -> None:
        self.target = target
        self.gateway = gateway
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        via = f" via {_where(gateway)}" if gateway else ""
        self.label = f"ssh {_where(target)}{via}"

    def _connection(self, target: SshTarget, gateway: Any = None) -> Any:
        return connection(target, self.connect_timeout, gateway, self.known_hosts)

    def _blocking(self, command: str, conn: Any, opened: threading.Event) -> RunResult:
        started = time.monotonic()
        try:
            conn.open()
        except Exception as exc:
            # A silent peer surfaces as "banner" or "No existing session" errors after the
            # banner timeout: what the user needs to hear is that the handshake timed out.
            import paramiko

            named = (ConnectionRefusedError, paramiko.AuthenticationException)
            if time.monotonic() - started >= self.connect_timeout * 0.9 and not isinstance(
                exc, named
            ):
                raise GatherError("timeout", self._timeout_text()) from exc
            raise
        opened.set()
        result, timed_out = run_bounded(conn, command, self.command_timeout)
        if timed_out:
            # A sick box can hang one section (ps on a D-state process…): keep the others.
            return RunResult(result.stdout, -1, timed_out=True)
        return RunResult(result.stdout, result.exited if result.exited is not None else -1)

    async def run(self, command: str) -> RunResult:
        for hop in (self.target, self.gateway):
            if hop and hop.key and not Path(hop.key).expanduser().is_file():
                raise GatherError(
                    "auth",
                    f"SSH key {hop.key} for {_where(hop)} not found (check the ssh key path)",
                )
        try:
            gateway = self._connection(self.gateway) if self.gateway else None
            conn = self._connection(self.target, gateway)
        except ConfigError as exc:  # ssh.known_hosts is missing
            raise GatherError("hostkey", str(exc)) from None
        opened = threading.Event()
        loop = asyncio.get_running_loop()
        running = asyncio.Event()

        def blocking() -> RunResult:
            loop.call_soon_threadsafe(running.set)
            return self._blocking(command, conn, opened)

        future = loop.run_in_executor(executor(), blocking)
        hops = 2 if gateway else 1
        # Belt and braces over paramiko's own timeouts: the handshake gets its budget only,
        # counted from when a thread picks it up (a big fleet queues for the pool).
        budget = self.connect_timeout * hops + 1.0
        try:
            await running.wait()
            done, _ = await asyncio.wait({future}, timeout=budget)
            if not done and not opened.is_set():
                raise GatherError("timeout", self._timeout_text())
            return await asyncio.wait_for(asyncio.shield(future), self.command_timeout + 2.0)
        except GatherError:
            raise
        except TimeoutError:
            raise GatherError(
                "timeout",
                f"the command on {_where(self.target)} ran over {self.command_timeout:g}s",
            ) from None
        except Exception as exc:
            raise self._classify(exc) from None
        finally:
            if not future.done():
                # Closing the transport wakes the blocked thread; it ends on its own.
                future.add_done_callback(_retrieve)
            await loop.run_in_executor(executor(), _close, conn, gateway)

    def _timeout_text(self) -> str:
        return (
            f"timed out after {self.connect_timeout:g}s connecting to {_where(self.target)}"
            " (the host may be too busy to accept a handshake)"
        )

    def _classify(self, exc: BaseException) -> GatherError:
        import paramiko

        where = _where(self.target)
        hops = [self.target] + ([self.gateway] if self.gateway else [])
        problem = host_key_problem(exc, hops, self.known_hosts)
        if problem:
            return GatherError("hostkey", problem)
        if isinstance(exc, socket.timeout | TimeoutError):
            return GatherError("timeout", self._timeout_text())
        refused = (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)
        if isinstance(exc, refused):
            return GatherError(
                "refused", f"connection refused by {where} (is sshd running? check the port)"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return GatherError(
                "auth", f"authentication failed for {where} (check the ssh user and key)"
            )
        if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
            return GatherError("timeout", self._timeout_text())
        if isinstance(exc, OSError | paramiko.SSHException | EOFError):
            return GatherError("error", f"cannot reach {where}: {exc or type(exc).__name__}")
        log.debug("unexpected SSH failure", exc_info=exc)
        return GatherError("error", f"SSH to {where} failed: {type(exc).__name__}: {exc}")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read it, so asyncio does not warn about a lost exception


def _close(conn: Any, gateway: Any) -> None:
    for c in (conn, gateway):
        if c is not None:
            try:
                c.close()
            except Exception:  # closing a half-open connection may fail; nothing to do
                log.debug("closing SSH connection failed", exc_info=True)


def runner_for(services: Services, target: HostTarget) -> Runner | None:
    """SSH per the host's settings; SSM Run Command for an ``executor: ssm`` host without
    SSH settings; None when there is no way in."""
    if target.ssh is None:
        if target.executor == "ssm" and target.instance_id:
            from bot.facts_ssm import SsmRunner

            return SsmRunner(services, target.instance_id)
        return None
    return SshRunner(
        target.ssh,
        gateway=target.gateway,
        connect_timeout=services.settings.ssh.connect_timeout,
        known_hosts=services.settings.ssh.known_hosts,
    )


async def gather_ssh(facts: Facts, runner: Runner) -> None:
    """Run the command through ``runner`` and fill ``facts``; failures go to its errors."""
    from bot.facts_parse import parse_into

    facts.source = runner.label
    via = "ssm" if runner.label.startswith("ssm ") else "ssh"
    try:
        result = await runner.run(command())
    except GatherError as exc:
        facts.ssh_status = exc.kind
        facts.errors.append(f"{via}: {exc}")
        return
    facts.ssh_status = "ok"
    if result.timed_out:
        limit = getattr(runner, "command_timeout", COMMAND_TIMEOUT)
        facts.errors.append(
            f"{via}: the command ran over {limit:g}s; facts it had not printed yet are missing"
        )
    parse_into(facts, result.stdout, via=via)
