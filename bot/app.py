"""The Bolt AsyncApp and its listeners (owned by the Slack-surface work; not implemented yet)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.services import Services


def make_handler(services: Services) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error": "not implemented yet"}, status=501)

    return handler
