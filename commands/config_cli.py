"""``stabilize config check``."""

from __future__ import annotations

import click
import yaml

from bot.config import cautions, describe
from commands.common import config_option, handle_errors, load


@click.group("config")
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
@handle_errors
def check(config_file: str | None) -> None:
    """Validate the YAML config and print what was understood, secrets masked; exit 2 on errors.

    Settings that are valid but weak in production (no ssh.known_hosts) get a "caution:" line.

    Example:

        stabilize config check --config stabilize.yaml
    """
    settings, secrets = load(config_file)
    click.echo(yaml.safe_dump(describe(settings, secrets), sort_keys=False, allow_unicode=True))
    for caution in cautions(settings):
        click.echo(f"caution: {caution}", err=True)
    click.echo(f"config OK: {settings.source}", err=True)


def register(group: click.Group) -> None:
    group.add_command(config)
