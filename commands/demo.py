"""``stabilize demo``: the whole loop on an embedded sandbox, no Slack or AWS account.

Everything below is the real bot: the signed CloudWatch alarm goes through ``/alerts/sns`` of
the real web app (served on 127.0.0.1), the incident and diagnosis come from the intake and
diagnosis code, the buttons are handled by the same core as Slack's, and ``resize-instance``
runs through the runbook engine — against moto on 127.0.0.1 instead of AWS. Host facts come
from this machine through the local runner (read-only commands, clearly labelled). Nothing
touches this machine's swap or any real cloud account.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from bot.errors import StabilizeError
from commands.common import handle_errors, run_async
from commands.demo_terminal import DemoTerminal

DEMO_USER = "U0DEMO"
DEMO_CHANNEL = "C0DEMO"
DEMO_DB = "./stabilize-demo.db"
RUNBOOK = "resize-instance"
WAIT = 45.0  # upper bound for each background stage; the demo itself takes seconds

# The seams the demo drives (docs/architecture.md). A missing one is named, never faked.
NEEDED = (
    ("bot.sandbox", "Sandbox"),
    ("bot.intake.sns", "parse"),
    ("bot.incidents", "ingest"),
    ("bot.facts_ssh", "LocalRunner"),
    ("bot.diagnosis", "diagnose_and_post"),
    ("bot.diagnosis", "load_recommendation"),
    ("bot.approvals", "create_request"),
    ("bot.approvals", "approve"),
    ("runbooks.engine", "Engine"),
    ("commands.actions", "handle_action"),
)


class DemoError(StabilizeError):
    """The demo cannot go on; one line that says why (and how to fix it)."""


def missing_pieces() -> list[str]:
    missing = []
    for module, name in NEEDED:
        try:
            found = importlib.import_module(module)
        except ImportError:
            missing.append(f"{module}.{name}")
            continue
        if not hasattr(found, name):
            missing.append(f"{module}.{name}")
    return missing


def demo_config(world: Any, cert_url_pattern: str) -> dict[str, Any]:
    """The embedded config: one host in the sandbox, the demo user may approve resizes."""
    return {
        "slack": {"channel": DEMO_CHANNEL},
        "approvals": {
            "approvers": [DEMO_USER],
            # One person plays every part here; in a team, keep the default (false).
            "allow_self": True,
            "runbooks": {
                RUNBOOK: {"approvers": [DEMO_USER], "required": 1, "allow_self": True},
            },
        },
        "aws": {"region": world.region},
        "hosts": {
            "prod-web-01": {
                "instance_id": world.instance_id,
                "asg": world.asg,
                # No SSH at all: facts come from the local runner (services.fact_runner) and
                # any shell runbook goes through SSM to the sandbox, never to this machine.
                "executor": "ssm",
            }
        },
        "sns": {"topics": [world.topic_arn], "cert_url_pattern": cert_url_pattern},
    }


# -- the loop -------------------------------------------------------------------------------


class Demo:
    def __init__(self, console: Console, *, script: bool, db_file: Path) -> None:
        self.console = console
        self.script = script
        self.db_file = db_file
        self.terminal = DemoTerminal(console)
        self.services: Any = None
        self.sandbox: Any = None
        self.world: Any = None
        self.signer: Any = None
        self.runbook = RUNBOOK  # what was asked for (interactive: the user's choice)
        self.replies: list[str] = []  # ephemeral answers to the demo user

    def say(self, text: str, style: str = "bold") -> None:
        self.console.print(Text(text, style=style))

    async def run(self) -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            self.intro()
            missing = missing_pieces()
            if missing:
                raise DemoError(
                    "the demo cannot run yet: these parts of the bot are missing: "
                    + ", ".join(missing)
                )
            url = await self.start(stack)
            incident_id = await self.raise_alarm(url)
            rec_button = await self.diagnosis(incident_id)
            request_id = await self.ask(rec_button)
            await self.approve(request_id)
            outcome = await self.follow(request_id)
            summary = await self.review(incident_id, request_id, outcome)
        return summary

    def intro(self) -> None:
        self.console.rule("[bold]stabilize demo")
        self.say(
            "Everything runs in this process on an embedded sandbox: AWS is moto on 127.0.0.1,"
            " Slack is this terminal. No Slack workspace, no AWS account, nothing real is"
            " touched: not this machine's swap, not any cloud.",
            "yellow",
        )

    async def start(self, stack: AsyncExitStack) -> str:
        from aiohttp import web

        from bot.config import Secrets, parse_settings
        from bot.facts_ssh import LocalRunner
        from bot.sandbox import Sandbox
        from bot.sandbox_sns import SnsSigner
        from bot.server import build_web_app
        from bot.services import build_services

        with self.console.status("Starting the AWS sandbox (moto) and seeding prod-web-01…"):
            self.sandbox = Sandbox().start()
            stack.callback(self.sandbox.stop)
            self.world = await asyncio.to_thread(self.sandbox.seed)
            signer = SnsSigner().start()
            stack.callback(signer.stop)
        w = self.world
        self.say(
            f"Sandbox AWS at {self.sandbox.url}: prod-web-01 = {w.instance_id}"
            f" ({w.instance_type}) in Auto Scaling Group {w.asg}, CPU pinned since the"
            f" 9 a.m. rush, alarm {w.alarm_name} → SNS topic {w.topic_arn.rsplit(':', 1)[1]}.",
            "",
        )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db_file}{suffix}").unlink(missing_ok=True)
        settings = parse_settings(demo_config(w, signer.cert_url_pattern), source="<demo>")
        self.services = build_services(
            settings, Secrets(), self.db_file, transport=self.terminal, slack=False
        )
        stack.callback(self.services.close)
        # A terminal has no rate limit: show messages as they come.
        self.services.outbox.post_interval = 0.0
        self.services.outbox.update_interval = 0.0
        self.services.fact_runner = LocalRunner()
        self._speed_up_waiters()
        self.say(f"Audit log and state: {self.db_file} (replaced on each run, kept after it)", "")

        app = build_web_app(self.services)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        from bot.sandbox import free_port

        port = free_port()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            raise DemoError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); free a port and run again"
            ) from None
        self.signer = signer
        return f"http://127.0.0.1:{port}"

    def _speed_up_waiters(self) -> None:
        """moto changes state at once: poll it every 0.2 s rather than AWS's 15 s."""
        engine = self.services.engine
        if engine is None or not hasattr(engine, "timing"):
            return
        from dataclasses import replace

        try:
            engine.timing = replace(engine.timing, waiter_delay=0.2, poll_interval=0.2)
        except (TypeError, ValueError):
            pass

    async def raise_alarm(self, url: str) -> str:
        import aiohttp

        from bot.sandbox import alarm_subject

        self.console.rule("1 · the alarm")
        message = self.signer.notification(
            self.world.topic_arn, self.sandbox.alarm_message(), subject=alarm_subject(self.world)
        )
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": self.world.topic_arn,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/alerts/sns", data=json.dumps(message), headers=headers) as resp,
        ):
            answer = await resp.text()
        self.say(
            f"CloudWatch alarm {self.world.alarm_name} → SNS (signed by the sandbox) →"
            f" POST {url}/alerts/sns → {resp.status}",
            "",
        )
        if resp.status != 200:
            raise DemoError(f"/alerts/sns refused the sandbox's alarm: {resp.status} {answer}")
        row = await self.wait_for("incident.opened", what="the incident to open")
        self.say(f"Incident {row['incident_id']} opened for {row['host']}.", "green")
        return str(row["incident_id"])

    async def wait_for(
        self,
        action: str | tuple[str, ...],
        *,
        what: str,
        incident_id: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        actions = (action,) if isinstance(action, str) else action
        deadline = time.monotonic() + WAIT
        audit = self.services.audit
        while time.monotonic() < deadline:
            for name in actions:
                rows = audit.list(action=name, incident_id=incident_id, request_id=request_id)
                if rows:
                    return rows[-1]
            await asyncio.sleep(0.1)
        raise DemoError(f"gave up after {WAIT:.0f}s waiting for {what}")

    async def settle(self) -> None:
        """Let the outbox show what is queued before asking for input."""
        deadline = time.monotonic() + 10
        while self.services.outbox.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def diagnosis(self, incident_id: str) -> dict[str, Any]:
        from bot.audit import detail_of
        from bot.diagnosis import load_recommendation

        self.console.rule("2 · the diagnosis")
        self.say(
            "Facts: this machine over the local runner (read-only commands, labelled as such)"
            " + the sandbox's EC2, Auto Scaling and CloudWatch.",
            "",
        )
        with self.console.status("Diagnosing prod-web-01…"):
            row = await self.wait_for(
                "diagnosis.posted", what="the diagnosis", incident_id=incident_id
            )
            await self.settle()
        findings = detail_of(row).get("findings") or []
        self.say(f"Diagnosis posted: {'; '.join(map(str, findings)) or 'no findings'}.", "green")
        candidates = [b for b in self.terminal.buttons if b.get("action_id", "").startswith("rec")]
        for button in candidates:
            rec = load_recommendation(self.services, str(button.get("value", "")))
            if rec is not None and rec.runbook == RUNBOOK:
                if self.script:
                    number = self.terminal.buttons.index(button) + 1
                    self.say(f"--script: pressing [{number}] ({RUNBOOK} {rec.params})", "cyan")
                    return button
                return await self.choose("Press a button to ask for a runbook")
        raise DemoError(f"the diagnosis recommended no {RUNBOOK}; nothing to approve")

    async def choose(self, prompt: str) -> dict[str, Any]:
        while True:
            answer = await asyncio.to_thread(click.prompt, prompt, type=int)
            if 1 <= answer <= len(self.terminal.buttons):
                return self.terminal.buttons[answer - 1]
            self.say(f"no button [{answer}]", "red")

    async def press(self, button: dict[str, Any]) -> Any:
        """A click, handled by the same core as Slack's buttons (commands.actions)."""
        from bot import runs
        from commands.actions import handle_action

        reply = handle_action(
            self.services,
            user=DEMO_USER,
            channel=DEMO_CHANNEL,
            action_id=str(button.get("action_id", "")),
            value=str(button.get("value", "")),
        )
        if reply.text:
            self.say(
                f"bot → {DEMO_USER} (only you see this): {reply.text}", "red" if reply.error else ""
            )
        if reply.update is not None:
            text, blocks = reply.update
            self.terminal.show_update(text, blocks)
        if reply.followup is not None:
            runs.spawn(reply.followup(self.respond))
        return reply

    async def respond(
        self,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        replace_original: bool = False,
    ) -> None:
        if replace_original:
            self.terminal.show_update(text, blocks)
        else:
            self.say(f"bot → {DEMO_USER} (only you see this): {text}", "")
            self.replies.append(text)

    async def ask(self, button: dict[str, Any]) -> str:
        from bot.audit import detail_of

        self.console.rule("3 · the approval")
        await self.press(button)
        row = await self.wait_for(("request.created", "input.rejected"), what="the request")
        if row["action"] == "input.rejected":
            error = str(detail_of(row).get("error") or (self.replies or ["refused"])[-1])
            raise DemoError(f"the bot refused to ask for {row['runbook']}: {error}")
        await self.settle()
        self.runbook = str(row["runbook"])
        self.say(f"Request {row['request_id']}: {row['runbook']} on {row['host']}.", "green")
        return str(row["request_id"])

    async def approve(self, request_id: str) -> None:
        while True:
            if self.script:
                button = next(
                    b
                    for b in self.terminal.buttons
                    if b.get("action_id", "").startswith("approve") and b.get("value") == request_id
                )
                self.say(f"--script: {DEMO_USER} presses Approve", "cyan")
            else:
                button = await self.choose("Press a button (Approve or Reject)")
            await self.press(button)
            if self.services.audit.list(request_id=request_id, action="request.rejected"):
                raise DemoError("you rejected the request: nothing ran (see the audit trail)")
            if self.services.audit.list(request_id=request_id, action="request.approved"):
                return

    async def follow(self, request_id: str) -> dict[str, Any]:
        """A progress bar over the run's steps (from the engine's audit rows), until it ends."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from bot.audit import detail_of
        from bot.timeline import describe

        runbook = self.runbook
        self.console.rule(f"4 · {runbook} against the sandbox")
        ends = ("execution.succeeded", "execution.failed", "execution.rolled_back")
        deadline = time.monotonic() + WAIT
        done: list[dict[str, Any]] = []
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task(f"{runbook}: waiting to start", total=None)
            while time.monotonic() < deadline:
                rows = self.services.audit.list(request_id=request_id)
                runs = [r for r in rows if r["action"].startswith("execution.")]
                steps = [r for r in runs if r["action"] == "execution.step"]
                total = self.terminal.steps_total
                if runs:
                    progress.update(
                        task,
                        description=f"{runbook}: {describe(runs[-1], detail_of(runs[-1]))[:60]}",
                        completed=len(steps),
                        total=max(total or 0, len(steps)) or None,
                    )
                done = [r for r in runs if r["action"] in ends]
                if done:
                    break
                await asyncio.sleep(0.1)
            else:
                raise DemoError(f"gave up after {WAIT:.0f}s waiting for {runbook} to finish")
        await self.settle()
        return done[-1]

    async def review(
        self, incident_id: str, request_id: str, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        from bot.timeline import build_timeline, to_table

        self.console.rule("5 · the audit trail")
        self.console.print(to_table(build_timeline(self.services.audit, incident_id)))
        result = self.services.audit.verify()
        self.say(f"stabilize audit verify: {result}", "green" if result.ok else "red")
        ok = outcome["action"] == "execution.succeeded" and result.ok
        if self.runbook == "resize-instance":
            before = self.world.instance_type
            after = await asyncio.to_thread(self.sandbox.instance_type, self.world.instance_id)
            ok = ok and after != before
            what = f"Sandbox instance {self.world.instance_id}: {before} → {after}"
        else:
            before, after = 1, await asyncio.to_thread(self.sandbox.desired_capacity)
            what = f"Sandbox group {self.world.asg}: desired capacity {before} → {after}"
        self.say(what, "green" if ok else "red")
        return {
            "ok": ok,
            "incident_id": incident_id,
            "request_id": request_id,
            "before": before,
            "after": after,
            "verified": result.ok,
        }


@click.command("demo")
@click.option(
    "--script",
    is_flag=True,
    help="Non-interactive: press the first resize-instance recommendation and approve it"
    " (the default when stdin is not a terminal).",
)
@click.option(
    "--db",
    "db_file",
    default=DEMO_DB,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where the demo writes its audit log (replaced on every run).",
)
@handle_errors
def demo(script: bool, db_file: str) -> None:
    """The whole loop on an embedded sandbox: alarm → incident → diagnosis → approval →
    resize-instance → audit trail. No Slack workspace, no AWS account; nothing real is
    touched. Needs the 'demo' extra: pip install -e '.[demo]' (or ./run demo).

    Example:

        stabilize demo --script
    """
    from bot.sandbox import moto_missing

    hint = moto_missing()
    if hint:
        raise DemoError(hint)
    # Piped (CI, a test) rich assumes 80 columns: give the timeline table room.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if not script and not (sys.stdin and sys.stdin.isatty()):
        # Nobody can press a button: play the scripted run rather than stop at the prompt.
        console.print("[cyan]stdin is not a terminal: running the demo as --script[/]")
        script = True
    started = time.monotonic()
    summary = run_async(Demo(console, script=script, db_file=Path(db_file)).run())
    elapsed = time.monotonic() - started
    console.rule()
    if not summary["ok"]:
        raise DemoError(f"the demo did not complete cleanly after {elapsed:.1f}s (see above)")
    console.print(
        f"[bold green]Demo complete in {elapsed:.1f}s.[/] Incident {summary['incident_id']}:"
        f" `STABILIZE_DB={db_file} stabilize audit timeline {summary['incident_id']}`"
    )


def register(group: click.Group) -> None:
    group.add_command(demo)
