"""Intake route for alertmanager alerts (owned by the alert-intake work; not implemented yet)."""

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    return web.json_response({"ok": False, "error": "not implemented yet"}, status=501)
