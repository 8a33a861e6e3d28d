"""`stabilize serve --socket-mode`: the same app over a Socket Mode websocket.

Slack's side is played by a small local server: ``apps.connections.open`` hands out a
``ws://127.0.0.1`` URL, the websocket delivers a slash command envelope and records the ack.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bot import runs
from bot.app import run_socket_mode
from bot.config import Secrets, parse_settings
from bot.errors import ConfigError
from bot.services import build_services

APP_TOKEN = "xapp-1-A0STABILIZE-1-socketmodetest"


class SocketModeSlack:
    """apps.connections.open + auth.test + one websocket that sends envelopes."""

    def __init__(self, envelopes: list[dict]) -> None:
        self.envelopes = envelopes
        self.acks: asyncio.Queue[dict] = asyncio.Queue()
        self.app_tokens: list[str] = []
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self.open)
        app.router.add_post("/api/auth.test", self.auth_test)
        app.router.add_get("/link", self.link)
        self.server = TestServer(app, host="127.0.0.1")

    async def open(self, request: web.Request) -> web.Response:
        self.app_tokens.append(request.headers.get("Authorization", ""))
        url = f"ws://127.0.0.1:{self.server.port}/link"
        return web.json_response({"ok": True, "url": url})

    async def auth_test(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "user_id": "U0BOT", "bot_id": "B0BOT", "team_id": "T0TEAM"}
        )

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1})
        for envelope in self.envelopes:
            await ws.send_json(envelope)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await self.acks.put(json.loads(message.data))
        return ws


def slash_envelope(slack_signer, text: str) -> dict:
    payload = dict(parse_qsl(slack_signer.slash_command(text, user_id="U0ALICE")))
    return {
        "envelope_id": "env-1",
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": payload,
    }


async def test_slash_command_over_socket_mode_is_acked_with_the_reply(tmp_path, slack_signer):
    slack = SocketModeSlack([slash_envelope(slack_signer, "help")])
    await slack.server.start_server()
    secrets = Secrets(  # no signing secret: Socket Mode does not need one
        slack_bot_token="xoxb-socket-mode-test",
        slack_app_token=APP_TOKEN,
        slack_api_url=f"http://127.0.0.1:{slack.server.port}/api/",
    )
    settings = parse_settings({"slack": {"channel": "C0ALERTS"}}, source="<test>")
    services = build_services(settings, secrets, tmp_path / "s.db", slack=False)
    handler = await run_socket_mode(services)
    try:
        ack = await asyncio.wait_for(slack.acks.get(), 20)
        assert ack["envelope_id"] == "env-1"
        assert "/stabilize run <runbook> <host>" in ack["payload"]["text"]
        assert slack.app_tokens == [f"Bearer {APP_TOKEN}"]
    finally:
        await handler.close_async()
        await runs.wait_idle(5)
        await slack.server.close()
        services.close()


async def test_socket_mode_needs_an_app_token(tmp_path):
    settings = parse_settings({"slack": {"channel": "C0ALERTS"}}, source="<test>")
    for token in (None, "xoxb-a-bot-token"):
        secrets = Secrets(slack_bot_token="xoxb-x", slack_signing_secret="s", slack_app_token=token)
        services = build_services(settings, secrets, tmp_path / "s.db", slack=False)
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
            await run_socket_mode(services)
        services.close()
