"""``stabilize manifest``: the Slack app manifest (YAML) to create the app from.

Only what the bot uses: the ``/stabilize`` slash command, interactivity (the buttons), and the
bot scopes ``commands`` (the slash command), ``chat:write`` (messages, updates, ephemeral
replies), ``chat:write.public`` (post in ``slack.channel`` without being invited first) and
``channels:history`` / ``groups:history`` (after a crash between Slack accepting a post and our
commit, the outbox looks the post up by its metadata key instead of posting it twice).
No event subscriptions, no user scopes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from bot.errors import InputError
from commands.common import handle_errors

BOT_SCOPES = [
    "commands",
    "chat:write",
    "chat:write.public",
    "channels:history",
    "groups:history",
]
EVENTS_PATH = "/slack/events"
PLACEHOLDER_URL = "https://stabilize.example.com" + EVENTS_PATH


def request_url(url: str | None) -> str:
    """``https://host[/path]`` → the events URL; refuses anything but https with a host."""
    if url is None:
        return PLACEHOLDER_URL
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise InputError(f"--url must be https://<your host> (Slack only calls HTTPS), got {url!r}")
    if parts.query or parts.fragment:
        raise InputError(f"--url must not have a query or fragment, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(EVENTS_PATH):
        path += EVENTS_PATH
    return f"https://{parts.netloc}{path}"


def build_manifest(*, socket_mode: bool = False, url: str | None = None) -> dict[str, Any]:
    """The manifest as a dict. With ``socket_mode`` Slack needs no URL at all."""
    command: dict[str, Any] = {
        "command": "/stabilize",
        "description": "Diagnose a host, ask for a runbook, read the audit log",
        "usage_hint": "<host> | run <runbook> <host> [key=value …] | audit [host] [since] | help",
        "should_escape": False,
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        events = request_url(url)
        command["url"] = events
        interactivity["request_url"] = events
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": "stabilize",
            "description": "Diagnoses overloaded hosts and runs approved runbooks.",
            "background_color": "#2c3e50",
        },
        "features": {
            "bot_user": {"display_name": "stabilize", "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


@click.command("manifest")
@click.option(
    "--socket-mode", is_flag=True, help="For `stabilize serve --socket-mode`: no public URL."
)
@click.option(
    "--url",
    metavar="https://HOST",
    default=None,
    help="Public HTTPS address of `stabilize serve` (/slack/events is appended).",
)
@handle_errors
def manifest(socket_mode: bool, url: str | None) -> None:
    """Print the Slack app manifest (YAML): the /stabilize command, interactivity, and only
    the scopes the bot needs. Paste it into Slack's "Create New App → From an app manifest".

    Example:

        stabilize manifest --url https://stabilize.example.com > slack-manifest.yaml
    """
    if socket_mode and url:
        raise InputError("--url and --socket-mode exclude each other (Socket Mode needs no URL)")
    text = yaml.safe_dump(
        build_manifest(socket_mode=socket_mode, url=url), sort_keys=False, allow_unicode=True
    )
    click.echo(text, nl=False)


def register(group: click.Group) -> None:
    group.add_command(manifest)
