"""One small interface to run shell commands on a host, whatever the way in.

``ssh.SshExecutor`` (fabric), ``ssm.SsmExecutor`` (SSM Run Command) and
``dry_run.DryRunExecutor`` (records, runs nothing) all expose ``run(command, timeout)``;
AWS API calls go through ``aws.AwsExecutor``. Runbooks write their commands once, and
``wrap_command`` shows exactly what will be sent (``sudo -n sh -c …`` over SSH as non-root).
"""

from __future__ import annotations

import getpass
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.config import HostSettings
from bot.errors import ExecutionError

if TYPE_CHECKING:
    from bot.services import Services
    from runbooks.model import Timing


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def brief(self, limit: int = 300) -> str:
        """The last meaningful line(s), for audit rows and Slack progress."""
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", " | ")
        return text if len(text) <= limit else "…" + text[-limit:]


class Executor(Protocol):
    """Runs one shell command (already wrapped, see ``wrap_command``) on one host."""

    description: str

    def run(self, command: str, *, timeout: float) -> CommandResult: ...

    def close(self) -> None: ...


def needs_sudo(host: HostSettings) -> bool:
    """SSH as anybody but root goes through ``sudo -n``; SSM already runs as root."""
    if host.executor == "ssm" or host.ssh is None:
        return False
    user = host.ssh.user or _local_user()
    return user != "root"


def wrap_command(host: HostSettings, command: str) -> str:
    """The exact text sent to the host for ``command``."""
    if needs_sudo(host):
        return f"sudo -n sh -c {shlex.quote(command)}"
    return command


def describe_target(services: Services, name: str, host: HostSettings) -> str:
    """``over ssh as ubuntu@10.0.1.5:22 via bastion`` / ``through SSM on i-…``."""
    if host.executor == "ssm":
        return f"through SSM Run Command (AWS-RunShellScript) on {host.instance_id}"
    if host.ssh is None:
        return "nowhere: no ssh settings"
    ssh = host.ssh
    text = f"over ssh as {ssh.user or _local_user()}@{ssh.host}:{ssh.port}"
    if ssh.gateway:
        text += f" via {ssh.gateway}"
    return text


def has_shell(host: HostSettings) -> bool:
    return (host.executor == "ssm" and host.instance_id is not None) or (
        host.executor == "ssh" and host.ssh is not None
    )


def shell_executor(
    services: Services, name: str, host: HostSettings, timing: Timing, request_id: str
) -> Executor:
    """The executor the host's config asks for (``executor: ssh`` or ``ssm``)."""
    if host.executor == "ssm":
        from runbooks.executors.ssm import SsmExecutor

        return SsmExecutor(services, host, timing, comment=f"stabilize {request_id}")
    if host.ssh is None:
        raise ExecutionError(f"{name} has no ssh settings (add hosts.{name}.ssh to the config)")
    from runbooks.executors.ssh import SshExecutor

    return SshExecutor(services, name, host)


def run_checked(executor: Executor, host: HostSettings, command: str, *, timeout: float) -> str:
    """Run and return stdout; a non-zero exit becomes ExecutionError with its last words."""
    result = executor.run(wrap_command(host, command), timeout=timeout)
    if not result.ok:
        raise ExecutionError(f"exit {result.exit_code}: {result.brief() or 'no output'}")
    return result.stdout


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
