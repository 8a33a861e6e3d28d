"""``stabilize config check``."""

from __future__ import annotations

import click
import yaml

from bot.config import describe
from commands.common import config_option, handle_errors, load


@click.group("config")
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
@handle_errors
def check(config_file: str | None) -> None:
    """Validate the YAML config and print what was understood, secrets masked; exit 2 on errors.

    Example:

        stabilize config check --config stabilize.yaml
    """
    settings, secrets = load(config_file)
    click.echo(yaml.safe_dump(describe(settings, secrets), sort_keys=False, allow_unicode=True))
    click.echo(f"config OK: {settings.source}", err=True)


def register(group: click.Group) -> None:
    group.add_command(config)
