"""Fixtures for the alert-intake tests: the real web app on 127.0.0.1, talking to the Slack
stand-in, with the automatic diagnosis replaced by a recorder.

Import what you use: ``from intake_fixtures import bot_server, diagnoses  # noqa: F401``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "intake"
WEBHOOK_TOKEN = "stabilize-test-webhook-token-7c1e"  # = helpers.signers.DEFAULT_WEBHOOK_TOKEN


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@dataclass
class Diagnoses:
    """Records the diagnoses the bot would have started: ``[(host, incident_id)]``."""

    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, services: Any, host: str, incident_id: int) -> None:
        self.calls.append((host, incident_id))


@pytest.fixture
def diagnoses(monkeypatch: pytest.MonkeyPatch) -> Diagnoses:
    import bot.incidents

    recorder = Diagnoses()
    monkeypatch.setattr(bot.incidents, "diagnosis_hook", recorder)
    return recorder


@dataclass
class BotServer:
    url: str
    services: Any
    session: aiohttp.ClientSession

    async def post(
        self, route: str, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        async with self.session.post(self.url + route, data=data, headers=headers or {}) as resp:
            try:
                answer = await resp.json(content_type=None)
            except ValueError:
                answer = {"raw": await resp.text()}
            return resp.status, answer

    def audit(self, action: str | None = None) -> list[dict[str, Any]]:
        return self.services.audit.list(action=action)

    def incidents(self) -> list[dict[str, Any]]:
        return self.services.db.query("SELECT * FROM incidents ORDER BY id")


async def start_bot(
    tmp_path: Path, slack_api: Any, settings: Any, **outbox: float
) -> tuple[BotServer, web.AppRunner]:
    from bot.config import Secrets
    from bot.server import build_web_app
    from bot.services import build_services

    secrets = Secrets(
        slack_bot_token=slack_api.token,
        slack_signing_secret="test-signing-secret",
        webhook_token=WEBHOOK_TOKEN,
        slack_api_url=slack_api.url,
    )
    services = build_services(settings, secrets, tmp_path / "bot.db")
    for name, value in outbox.items():
        setattr(services.outbox, name, value)
    runner = web.AppRunner(build_web_app(services), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    return BotServer(f"http://127.0.0.1:{port}", services, session), runner


@pytest.fixture
async def bot_server(
    tmp_path: Path, slack_api: Any, settings_factory: Any, diagnoses: Diagnoses
) -> AsyncIterator[BotServer]:
    """The real ``stabilize`` web app (outbox worker included) on 127.0.0.1."""
    server, runner = await start_bot(tmp_path, slack_api, settings_factory())
    try:
        yield server
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()


async def until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Await ``predicate()`` becoming truthy without blocking the bot on this event loop.
    The timeout is only a bound so a broken test does not hang, not a speed assertion."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def top_level(slack_api: Any, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
    """Top-level messages in ``channel`` (thread replies left out)."""
    return [m for m in slack_api.messages(channel) if m.get("thread_ts") in (None, m["ts"])]
