"""Shell commands over SSH with fabric: key, port, user and jump host from the config."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.config import HostSettings
from bot.errors import ConfigError, ExecutionError
from bot.ssh import connection, host_key_problem, run_bounded
from runbooks.executors import CommandResult

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)


class SshExecutor:
    """One fabric connection per execution, opened on the first command."""

    def __init__(self, services: Services, name: str, host: HostSettings) -> None:
        assert host.ssh is not None
        settings = services.settings
        timeout = settings.ssh.connect_timeout
        self.known_hosts = settings.ssh.known_hosts
        self.hops = [host.ssh]
        gateway = None
        try:
            if host.ssh.gateway:
                self.hops.append(settings.ssh.gateways[host.ssh.gateway])
                gateway = connection(self.hops[1], timeout, known_hosts=self.known_hosts)
            self.conn = connection(host.ssh, timeout, gateway, self.known_hosts)
        except ConfigError as exc:  # ssh.known_hosts is missing
            raise ExecutionError(str(exc)) from None
        self.name = name
        self._gateway = gateway
        self.description = f"ssh {host.ssh.user or ''}@{host.ssh.host}:{host.ssh.port}"

    def run(self, command: str, *, timeout: float) -> CommandResult:
        try:
            result, timed_out = run_bounded(self.conn, command, timeout, pty=False)
        except Exception as exc:  # paramiko / socket errors: one line, naming the host
            problem = host_key_problem(exc, self.hops, self.known_hosts)
            if problem:
                raise ExecutionError(f"refused to run on {self.name}: {problem}") from None
            raise ExecutionError(
                f"cannot run over ssh on {self.name}: {type(exc).__name__}: {exc}"
                " (check hosts.{0}.ssh: host, port, user, key)".format(self.name)
            ) from None
        if timed_out:
            raise ExecutionError(f"timed out after {timeout:.0f}s on {self.name}")
        if result.exited == -1:  # paramiko: the channel closed without an exit status
            raise ExecutionError(
                f"lost the ssh connection to {self.name} while the command ran (no exit status)"
            )
        return CommandResult(result.exited, result.stdout, result.stderr)

    def close(self) -> None:
        for conn in (self.conn, self._gateway):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing a dead connection must not hide the real error
                    log.debug("closing ssh connection failed", exc_info=True)
