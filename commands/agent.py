"""``stabilize agent``: the host agent. The work is in ``bot.agent`` (standard library only,
also runnable as ``python3 -m bot.agent``); this module only turns click options into its
config, from the same option table."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from bot.agent.options import OPTIONS, AgentConfigError, build_config


def _with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(OPTIONS):
        if opt.kind == "flag":
            func = click.option(opt.flag, opt.name, is_flag=True, help=opt.help)(func)
        else:
            shown = f" [default: {opt.default}]" if opt.default not in (None, "") else ""
            func = click.option(
                opt.flag, opt.name, default=None, metavar=opt.metavar, help=opt.help + shown
            )(func)
    return func


@click.command("agent")
@_with_options
def agent(**values: Any) -> None:
    """Run the host agent: watch memory pressure, OOM kills, swap, CPU, disk and services,
    and send signed alerts to the bot's /alerts/agent. The key is STABILIZE_WEBHOOK_TOKEN.

    Alerts wait in an on-disk spool while the bot is unreachable and arrive later, in order.
    On a box where pip cannot run, the same agent runs as ``python3 -m bot.agent``.

    Example:

        STABILIZE_WEBHOOK_TOKEN=… stabilize agent --url https://bot.example.com \\
            --host prod-web-01 --services nginx,mysqld

        stabilize agent --once --host prod-web-01          # what it would send now

        stabilize agent --url https://bot.example.com --host prod-web-01 --print-systemd-unit
    """
    from bot.agent.main import run

    try:
        config = build_config(values, argv=tuple(sys.argv[1:]))
    except AgentConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run(config))


def register(group: click.Group) -> None:
    group.add_command(agent)
