"""An executor that runs nothing: it records what it was asked, for dry runs and plans."""

from __future__ import annotations

from runbooks.executors import CommandResult


class DryRunExecutor:
    description = "dry run (nothing is executed)"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float) -> CommandResult:
        self.commands.append(command)
        return CommandResult(0, "", "")

    def close(self) -> None:
        pass
