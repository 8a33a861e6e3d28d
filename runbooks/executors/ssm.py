"""Shell commands through SSM Run Command (``AWS-RunShellScript``), for hosts without SSH.

SSM runs commands as root, so nothing is wrapped in sudo. Each command is one
``send_command`` and is polled with ``get_command_invocation`` until it finishes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.config import HostSettings
from bot.errors import ExecutionError
from runbooks.executors import CommandResult

if TYPE_CHECKING:
    from bot.services import Services
    from runbooks.model import Timing

DOCUMENT = "AWS-RunShellScript"
_DONE = {"Success", "Failed", "Cancelled", "TimedOut", "Cancelling"}


class SsmExecutor:
    def __init__(
        self, services: Services, host: HostSettings, timing: Timing, *, comment: str = ""
    ) -> None:
        assert host.instance_id is not None
        self.ssm = services.aws("ssm")
        self.instance_id = host.instance_id
        self.timing = timing
        self.comment = comment[:100]
        self.description = f"ssm {host.instance_id}"
        self.command_ids: list[str] = []

    def run(self, command: str, *, timeout: float) -> CommandResult:
        try:
            sent = self.ssm.send_command(
                InstanceIds=[self.instance_id],
                DocumentName=DOCUMENT,
                Comment=self.comment,
                TimeoutSeconds=max(30, int(timeout)),
                Parameters={"commands": [command], "executionTimeout": [str(int(timeout))]},
            )
        except (ClientError, BotoCoreError) as exc:
            raise ExecutionError(f"SSM send_command to {self.instance_id} failed: {exc}") from None
        command_id = sent["Command"]["CommandId"]
        self.command_ids.append(command_id)
        deadline = time.monotonic() + timeout
        while True:
            invocation = self._invocation(command_id)
            if invocation is not None and invocation.get("Status") in _DONE:
                return CommandResult(
                    int(invocation.get("ResponseCode", -1)),
                    invocation.get("StandardOutputContent", "") or "",
                    invocation.get("StandardErrorContent", "") or "",
                )
            if time.monotonic() > deadline:
                raise ExecutionError(
                    f"SSM command {command_id} on {self.instance_id} did not finish in"
                    f" {timeout:.0f}s"
                )
            time.sleep(min(self.timing.poll_interval, 2.0))

    def _invocation(self, command_id: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance_id)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvocationDoesNotExist":
                return None  # not registered yet: SSM is eventually consistent
            raise ExecutionError(f"SSM get_command_invocation failed: {exc}") from None

    def close(self) -> None:
        pass
