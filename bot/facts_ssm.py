"""Host facts through SSM Run Command, for ``executor: ssm`` hosts that have no SSH settings.

The same read-only script as over SSH (``AWS-RunShellScript`` runs it with ``sh``); the output
comes back from ``get_command_invocation`` (SSM keeps at most 24,000 characters of it: the
script prints the processes last, largest first, so a cut costs the smallest ones).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bot.facts_aws import AwsFailure, call
from bot.facts_ssh import COMMAND_TIMEOUT, SCRIPT, GatherError, RunResult

if TYPE_CHECKING:
    from bot.services import Services

DOCUMENT = "AWS-RunShellScript"
POLL = 0.5
_DONE = {"Success", "Failed", "Cancelled", "TimedOut"}


class SsmRunner:
    """Runs the fact script on ``instance_id`` through SSM (ssm:SendCommand,
    ssm:GetCommandInvocation)."""

    def __init__(
        self, services: Services, instance_id: str, *, timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self.services = services
        self.instance_id = instance_id
        self.command_timeout = timeout
        self.label = f"ssm {instance_id}"

    async def run(self, command: str) -> RunResult:
        # ``command`` is the ssh form (``sh -c '…'``); SSM takes the script itself.
        try:
            sent = await call(
                self.services,
                "ssm",
                "send_command",
                InstanceIds=[self.instance_id],
                DocumentName=DOCUMENT,
                Comment="stabilize diagnosis (read-only)",
                TimeoutSeconds=max(30, int(self.command_timeout)),
                Parameters={
                    "commands": [SCRIPT],
                    "executionTimeout": [str(int(self.command_timeout))],
                },
            )
        except AwsFailure as exc:
            raise GatherError("error", str(exc).removeprefix("aws: ")) from None
        command_id = sent["Command"]["CommandId"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while True:
            invocation = await self._invocation(command_id)
            if invocation is not None and invocation.get("Status") in _DONE:
                output = str(invocation.get("StandardOutputContent") or "")
                return RunResult(output, int(invocation.get("ResponseCode", -1)))
            if loop.time() > deadline:
                raise GatherError(
                    "timeout",
                    f"SSM command {command_id} on {self.instance_id} did not finish in"
                    f" {self.command_timeout:g}s (is the SSM agent running?)",
                )
            await asyncio.sleep(POLL)

    async def _invocation(self, command_id: str) -> dict[str, Any] | None:
        try:
            return await call(
                self.services,
                "ssm",
                "get_command_invocation",
                CommandId=command_id,
                InstanceId=self.instance_id,
            )
        except AwsFailure as exc:
            if "InvocationDoesNotExist" in str(exc):
                return None  # not registered yet: SSM is eventually consistent
            raise GatherError("error", str(exc).removeprefix("aws: ")) from None
