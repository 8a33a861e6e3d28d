"""Fixtures of the Slack-surface tests: the bot's whole HTTP app served on 127.0.0.1 against
the Slack stand-in, signed like Slack, with a runbook-engine stand-in that records calls.

``slack_bot(**config)`` starts one (config keys merge into the test defaults; import
``slack_bot_fixture`` into a test module to get the ``slack_bot`` fixture);
``bot.restart()`` builds new Services and a new app on the same database file.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers import deep_merge
from helpers.signers import SlackSigner
from slack_standin import SlackStandIn

from bot import runs
from bot.config import Secrets, parse_settings
from bot.errors import InputError
from bot.server import build_web_app
from bot.services import Services, build_services

HOSTS = {
    "prod-web-01": {"ssh": {"host": "127.0.0.1", "port": 22, "user": "ubuntu"}},
    "prod-db-01": {"ssh": {"host": "127.0.0.1", "port": 22, "user": "ubuntu"}},
}
BASE_CONFIG: dict[str, Any] = {
    "slack": {"channel": "C0ALERTS"},
    "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
    "hosts": HOSTS,
}


class StandInEngine:
    """Records what the approval flow asks of the runbook engine (tests only)."""

    RUNBOOKS = ("add-swap", "resize-instance", "scale-asg")

    def __init__(self, outcome: str = "succeeded") -> None:
        self.outcome = outcome
        self.validated: list[tuple[str, str, dict[str, str]]] = []
        self.executed: list[Any] = []
        self.gate: asyncio.Event | None = None  # set it to hold executions mid-run
        self.locks: dict[str, dict[str, Any]] = {}  # host -> what lock_holder answers

    def get_runbook(self, name: str) -> str:
        if name not in self.RUNBOOKS:
            raise InputError(f"unknown runbook {name!r} (known runbooks: add-swap, …)")
        return name

    def validate(
        self, services: Services, runbook: str, host: str, raw: dict[str, str]
    ) -> dict[str, Any]:
        self.get_runbook(runbook)
        if host not in services.settings.hosts:
            raise InputError(f"unknown host {host!r}: not in the inventory")
        unknown = set(raw) - {"size", "path"}
        if unknown:
            raise InputError(f"unknown parameter {sorted(unknown)[0]!r} for {runbook}")
        size = raw.get("size", "4G")
        if not re.fullmatch(r"[1-9][0-9]?G", size):
            raise InputError(f"size must be 1G–64G, got {size!r}")
        self.validated.append((runbook, host, dict(raw)))
        return {"size": size, "path": raw.get("path", "/swapfile")}

    def plan(
        self, services: Services, runbook: str, host: str, params: dict[str, Any]
    ) -> list[str]:
        return [
            f"ssh {host}: fallocate -l {params['size']} {params['path']}",
            f"ssh {host}: chmod 600 {params['path']} && mkswap {params['path']}",
            f"ssh {host}: swapon {params['path']}",
        ]

    def format_plan(self, steps: list[str]) -> str:
        return "\n".join(f"{n}. {s}" for n, s in enumerate(steps, 1))

    async def execute(
        self,
        services: Services,
        job: Any,
        *,
        progress: Callable[[str], Awaitable[None]] | None = None,
    ) -> Any:
        self.executed.append(job)
        if progress:
            await progress(f"step 1/2 on {job.host}: fallocate")
        if self.gate is not None:
            await self.gate.wait()
        if progress:
            await progress(f"step 2/2 on {job.host}: swapon")
        return SimpleNamespace(
            ok=self.outcome == "succeeded",
            state=self.outcome,
            summary=f"{job.runbook} on {job.host} {self.outcome}",
            error=None if self.outcome == "succeeded" else "swapon: Operation not permitted",
        )

    def lock_holder(self, services: Services, host: str) -> dict[str, Any] | None:
        return self.locks.get(host)


@dataclass
class Answer:
    status: int
    text: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.text) if self.text else {}


@dataclass
class SlackBot:
    """One running bot: ``command``/``click`` send signed requests over real HTTP."""

    api: SlackStandIn
    signer: SlackSigner
    db_file: Path
    config: dict[str, Any]
    engine: Any
    background: bool = False
    services: Services = field(init=False)
    client: TestClient = field(init=False)

    async def start(self) -> SlackBot:
        settings = parse_settings(self.config, source="<test>")
        secrets = Secrets(
            slack_bot_token=self.api.token,
            slack_signing_secret=self.signer.secret,
            slack_api_url=self.api.url,
        )
        self.services = build_services(settings, secrets, self.db_file)
        self.services.engine = self.engine
        self.services.outbox.post_interval = 0.0
        self.services.outbox.update_interval = 0.0
        app = build_web_app(self.services, background=self.background)
        self.client = TestClient(TestServer(app, host="127.0.0.1"))
        await self.client.start_server()
        return self

    async def stop(self) -> None:
        await runs.wait_idle()
        await self.client.close()
        self.services.close()

    async def restart(self) -> SlackBot:
        """A new process, as far as the bot can tell: new Services, new app, same DB file."""
        await self.stop()
        return await self.start()

    async def post(self, body: str | bytes, headers: dict[str, str]) -> Answer:
        resp = await self.client.post("/slack/events", data=body, headers=headers)
        return Answer(resp.status, await resp.text())

    async def command(self, text: str, *, user: str = "U0ALICE", **kw: Any) -> Answer:
        body = self.signer.slash_command(text, user_id=user, **kw)
        return await self.post(body, self.signer.headers(body))

    async def click(
        self, action_id: str, value: str, *, user: str = "U0ALICE", retry: int | None = None
    ) -> Answer:
        body = self.signer.block_actions(action_id, value, user_id=user)
        headers = self.signer.headers(body)
        if retry is not None:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return await self.post(body, headers)

    async def settle(self) -> None:
        """Let the work after the acks finish and the outbox deliver."""
        for _ in range(3):
            await runs.wait_idle()
            assert await self.services.outbox.drain(15)

    async def ask(self, text: str = "run add-swap prod-web-01 size=2G", user: str = "U0CAROL"):
        """``/stabilize run …`` then wait for the request; returns the stored request."""
        from bot import approvals

        before = {r.id for r in approvals.list_requests(self.services)}
        answer = await self.command(text, user=user)
        assert answer.status == 200, answer.text
        await self.settle()
        new = [r for r in approvals.list_requests(self.services) if r.id not in before]
        assert len(new) == 1, f"expected one new request, got {new}; ack: {answer.text}"
        return new[0]

    def message(self, request_id: str) -> dict[str, Any]:
        """The request message as Slack shows it now (updates applied)."""
        for m in self.api.messages("C0ALERTS"):
            if request_id in m.get("text", ""):
                return m
        raise AssertionError(f"no message for {request_id}")

    def thread(self, request_id: str) -> list[str]:
        parent = self.message(request_id)["ts"]
        return [
            m["text"]
            for m in self.api.messages("C0ALERTS")
            if m.get("thread_ts") == parent and m["ts"] != parent
        ]

    def ephemeral_replies(self) -> list[str]:
        """Ephemeral lines sent through response URLs (not message replacements)."""
        return [
            c.args.get("text", "")
            for c in self.api.calls("response_url")
            if not c.args.get("replace_original")
        ]

    def replacements(self) -> list[dict[str, Any]]:
        return [c.args for c in self.api.calls("response_url") if c.args.get("replace_original")]

    def audit(self, action: str) -> list[dict[str, Any]]:
        return self.services.audit.list(action=action)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e
        for b in message.get("blocks", [])
        if b.get("type") == "actions"
        for e in b.get("elements", [])
    ]


def text_of(message: dict[str, Any]) -> str:
    """Everything a person reads in a message: its text and its blocks' text."""
    parts = [message.get("text", "")]
    for b in message.get("blocks", []):
        if isinstance(b.get("text"), dict):
            parts.append(b["text"].get("text", ""))
        for e in b.get("elements", []):
            if isinstance(e.get("text"), dict):
                parts.append(e["text"].get("text", ""))
            elif isinstance(e.get("text"), str):
                parts.append(e["text"])
    return "\n".join(parts)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll without blocking the event loop the bot runs in."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture(name="slack_bot")
async def slack_bot_fixture(
    slack_api: SlackStandIn, slack_signer: SlackSigner, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[SlackBot]]]:
    """``bot = await slack_bot(approvals={"required": 2}, engine=StandInEngine())``."""
    started: list[SlackBot] = []

    async def start(*, engine: Any = None, background: bool = False, **config: Any) -> SlackBot:
        bot = SlackBot(
            api=slack_api,
            signer=slack_signer,
            db_file=tmp_path / "stabilize.db",
            config=deep_merge(BASE_CONFIG, config),
            engine=engine if engine is not None else StandInEngine(),
            background=background,
        )
        started.append(bot)
        return await bot.start()

    yield start
    for bot in started:
        await bot.stop()
