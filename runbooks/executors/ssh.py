"""Shell commands over SSH with fabric: key, port, user and jump host from the config."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from invoke.exceptions import CommandTimedOut

from bot.config import HostSettings
from bot.errors import ExecutionError
from bot.ssh import connection
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
        gateway = None
        if host.ssh.gateway:
            gateway = connection(settings.ssh.gateways[host.ssh.gateway], timeout)
        self.name = name
        self.conn = connection(host.ssh, timeout, gateway)
        self._gateway = gateway
        self.description = f"ssh {host.ssh.user or ''}@{host.ssh.host}:{host.ssh.port}"

    def run(self, command: str, *, timeout: float) -> CommandResult:
        try:
            result = self.conn.run(command, hide=True, warn=True, timeout=timeout, pty=False)
        except CommandTimedOut:
            raise ExecutionError(f"timed out after {timeout:.0f}s on {self.name}") from None
        except Exception as exc:  # paramiko / socket errors: one line, naming the host
            raise ExecutionError(
                f"cannot run over ssh on {self.name}: {type(exc).__name__}: {exc}"
                " (check hosts.{0}.ssh: host, port, user, key)".format(self.name)
            ) from None
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
