"""``stabilize shell``: the same commands, messages and buttons as in Slack, in a terminal.

Type what you would after ``/stabilize`` (``help``, ``run add-swap web-1 size=2G``, ``audit``,
a host name), a button's number to click it, ``as U0BOB`` to act as another user (so the
approval policy can be tried), ``quit`` to leave. The bot behind it is the real one: the same
database, audit log, policy and runbook engine (``--dry-run`` to only see plans).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import TextIO

import click

from bot import runs
from bot.config import db_path
from bot.errors import InputError
from bot.services import Services, build_services
from bot.terminal import TerminalTransport, plain, render
from commands.actions import handle_action
from commands.common import config_option, handle_errors, load, run_async
from commands.reply import Blocks, Reply
from commands.slash import handle_command

DEFAULT_USER = "U0SHELL"
USER_RE = re.compile(r"^[UW][A-Z0-9]{2,31}\Z")


class ShellSession:
    """One terminal conversation with the bot; ``handle(line)`` is False when it is over."""

    def __init__(
        self, services: Services, terminal: TerminalTransport, user: str, out: TextIO
    ) -> None:
        self.services = services
        self.terminal = terminal
        self.user = user
        self.out = out
        self.channel = services.settings.slack.channel
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Deliver the bot's messages (the outbox) to the terminal as they are queued."""
        self._worker = asyncio.create_task(self.services.outbox.run(idle=0.05))

    async def stop(self) -> None:
        await runs.wait_idle()
        await self.delivered(5.0)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    def say(self, text: str) -> None:
        print(text, file=self.out)
        self.out.flush()

    async def respond(
        self, text: str, blocks: Blocks | None = None, *, replace_original: bool = False
    ) -> None:
        lines, _ = render(text, blocks)
        if replace_original:  # what Slack's response_url does to the clicked message
            self.say("message updated:\n" + "\n".join(f"  {line}" for line in lines))
            return
        self.say(f"(only {self.user} sees this) " + "\n".join(lines))

    async def show(self, reply: Reply) -> None:
        if reply.update is not None:
            await self.respond(*reply.update, replace_original=True)
        if reply.text or reply.blocks:
            await self.respond(reply.text, reply.blocks)
        if reply.followup is not None:
            await reply.followup(self.respond)
        await runs.wait_idle()
        await self.delivered()

    async def delivered(self, timeout: float = 30.0) -> None:
        """Wait until the outbox printed everything queued so far."""
        deadline = time.monotonic() + timeout
        while self.services.outbox.pending() and time.monotonic() < deadline:
            self.services.outbox.wake()
            await asyncio.sleep(0.02)

    async def handle(self, line: str) -> bool:
        line = line.strip()
        if not line:
            return True
        if line in {"quit", "exit", "q"}:
            return False
        if line.startswith("as "):
            who = line[3:].strip()
            if not USER_RE.match(who):
                self.say(f"not a Slack user id: {who!r} (like U0ALICE)")
            else:
                self.user = who
                self.say(f"you are now {who}")
            return True
        if line.isdigit():
            button = self.terminal.buttons.get(int(line))
            if button is None:
                self.say(f"there is no button [{line}] (any more); buttons are numbered in [ ]")
                return True
            self.say(f"{self.user} clicked [{button.number}] {button.label}")
            reply = handle_action(
                self.services,
                user=self.user,
                channel=button.channel,
                action_id=button.action_id,
                value=button.value,
            )
        else:
            text = line.removeprefix("/stabilize").strip()
            reply = handle_command(self.services, user=self.user, channel=self.channel, text=text)
        await self.show(reply)
        return True


async def _loop(services: Services, terminal: TerminalTransport, user: str, out: TextIO) -> None:
    session = ShellSession(services, terminal, user, out)
    session.start()
    session.say(
        f"stabilize shell — you are {user} in #{session.channel} (database {services.db.path})."
        "\nType help, a command (run …, audit, a host), a button's number to click it,"
        " `as U0BOB` to act as someone else, quit to leave."
    )
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, plain(f"{session.user}> "))
            except EOFError:
                break
            if not await session.handle(line):
                break
    finally:
        await session.stop()


@click.command("shell")
@config_option
@click.option(
    "--as",
    "user",
    default=DEFAULT_USER,
    show_default=True,
    metavar="USER_ID",
    help="Act as this Slack user id (try the approval policy as several people).",
)
@click.option("--dry-run", is_flag=True, help="Approved runbooks only show their plan.")
@handle_errors
def shell(config_file: str | None, user: str, dry_run: bool) -> None:
    """A local chat console with the same commands and numbered buttons, no Slack needed.

    Example:

        stabilize shell --as U0ALICE --dry-run
        U0ALICE> run add-swap prod-web-01 size=4G
        U0ALICE> as U0BOB
        U0BOB> 1
    """
    if not USER_RE.match(user):
        raise InputError(f"--as needs a Slack user id like U0ALICE, got {user!r}")
    settings, secrets = load(config_file)
    terminal = TerminalTransport(sys.stdout)
    services = build_services(
        settings, secrets, db_path(), transport=terminal, dry_run=dry_run or None
    )
    services.outbox.post_interval = 0.0
    services.outbox.update_interval = 0.0
    try:
        run_async(_loop(services, terminal, user, sys.stdout))
    finally:
        services.close()


def register(group: click.Group) -> None:
    group.add_command(shell)
