"""Helpers shared by the CLI commands: config loading, error handling, the CLI actor."""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from bot.config import Secrets, Settings, db_path, load_settings
from bot.errors import StabilizeError
from bot.services import Services, build_services

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config (default: $STABILIZE_CONFIG or ./stabilize.yaml).",
)


class CliError(click.ClickException):
    """A StabilizeError shown as one line on stderr, with the error's own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def fail(error: StabilizeError) -> CliError:
    return CliError(str(error), getattr(error, "exit_code", 1))


def handle_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Turn StabilizeError into ``error: <one line>`` and its exit code; logs keep the trace."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except StabilizeError as exc:
            logging.getLogger("stabilize").debug("command failed", exc_info=True)
            raise fail(exc) from None

    return wrapper


def load(config_file: str | None) -> tuple[Settings, Secrets]:
    return load_settings(config_file), Secrets.from_env()


def open_services(config_file: str | None, *, slack: bool = False, **kwargs: Any) -> Services:
    settings, secrets = load(config_file)
    return build_services(settings, secrets, db_path(), slack=slack, **kwargs)


def cli_actor() -> str:
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return f"cli:{login}"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
