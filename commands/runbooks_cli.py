"""``stabilize runbooks`` and ``stabilize plan``: what the bot can do, and exactly how."""

from __future__ import annotations

import click

from bot.errors import InputError
from commands.common import cli_actor, config_option, handle_errors, open_services
from runbooks.engine import RUNBOOKS, format_plan, plan, validate
from runbooks.params import parse_pairs


@click.command("runbooks")
@handle_errors
def runbooks_command() -> None:
    """List the runbooks with their parameters, defaults and bounds.

    Example:

        stabilize runbooks
    """
    for rb in RUNBOOKS.values():
        click.echo(f"{rb.name}  (risk: {rb.risk}, target: {rb.target})")
        click.echo(f"  {rb.description}")
        for p in rb.params:
            click.echo(f"    {p.describe()}")
        click.echo("")


@click.command("plan")
@click.argument("runbook")
@click.argument("host")
@click.argument("params", nargs=-1)
@config_option
@handle_errors
def plan_command(runbook: str, host: str, params: tuple[str, ...], config_file: str | None) -> None:
    """Print the exact commands and API calls a runbook would run on HOST; runs nothing.

    Example:

        stabilize plan add-swap prod-web-01 size=8G
    """
    services = open_services(config_file)
    try:
        try:
            checked = validate(services, runbook, host, parse_pairs(params), check_lock=False)
            steps = plan(services, runbook, host, checked)
        except InputError as exc:
            services.audit.append(
                cli_actor(),
                "input.rejected",
                detail={"command": "plan", "runbook": runbook[:64], "error": str(exc)},
            )
            raise
        shown = " ".join(f"{k}={v}" for k, v in checked.items())
        click.echo(f"plan: {runbook} on {host} ({shown})")
        click.echo(format_plan(steps))
    finally:
        services.close()


def register(group: click.Group) -> None:
    group.add_command(runbooks_command)
    group.add_command(plan_command)
