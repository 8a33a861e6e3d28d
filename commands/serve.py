"""``stabilize serve``: the HTTP server (Slack events, alerts, health, metrics)."""

from __future__ import annotations

import logging

import click
from aiohttp import web

from bot.config import cautions, db_path
from bot.errors import ConfigError
from bot.server import build_web_app
from bot.services import build_services
from commands.common import config_option, handle_errors, load


@click.command("serve")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--socket-mode", is_flag=True, help="Talk to Slack over Socket Mode (SLACK_APP_TOKEN)."
)
@click.option("--dry-run", is_flag=True, help="Approved runbooks only post their plan.")
@handle_errors
def serve(config_file: str | None, host: str, port: int, socket_mode: bool, dry_run: bool) -> None:
    """Serve /slack/events, /alerts/*, /healthz and /metrics.

    Example:

        SLACK_BOT_TOKEN=xoxb-… SLACK_SIGNING_SECRET=… stabilize serve --port 3000
    """
    settings, secrets = load(config_file)
    if not secrets.slack_signing_secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set (copy it from your Slack app's Basic Information page)"
        )
    if not secrets.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (export the bot token, xoxb-…)")
    if socket_mode and not secrets.slack_app_token:
        raise ConfigError("--socket-mode needs SLACK_APP_TOKEN (an app-level token, xapp-…)")
    # A long-running server logs what it does (INFO, with times), down to DEBUG with -v.
    logging.basicConfig(
        level=min(logging.getLogger().level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for caution in cautions(settings):
        logging.getLogger("stabilize").warning("%s", caution)
    services = build_services(settings, secrets, db_path(), dry_run=dry_run or None)
    app = build_web_app(services)
    if socket_mode:
        from bot.app import run_socket_mode  # type: ignore[attr-defined]

        app.on_startup.append(lambda _app: run_socket_mode(services))
    click.echo(f"stabilize serving on http://{host}:{port} (db {services.db.path})", err=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


def register(group: click.Group) -> None:
    group.add_command(serve)
