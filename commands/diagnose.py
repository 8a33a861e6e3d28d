"""``stabilize diagnose <host> [--json]``: the same diagnosis as ``/stabilize <host>``,
printed instead of posted."""

from __future__ import annotations

import json

import click

from bot.diagnosis import Diagnosis, check_host_name, diagnose, record
from bot.errors import InputError
from commands.common import cli_actor, config_option, handle_errors, open_services, run_async

SEVERITY_MARK = {"critical": "CRITICAL", "warning": "WARNING", "info": "ok"}


def format_text(d: Diagnosis) -> str:
    """A readable diagnosis for a terminal."""
    f = d.facts
    lines = [f"Diagnosis of {d.host}"]
    if f.source:
        lines.append(f"  host facts: {f.source} ({f.ssh_status})")
    if f.instance:
        i = f.instance
        lines.append(f"  AWS: {i.id} {i.type} {i.state}")
    lines.append("")
    for finding in d.findings:
        lines.append(f"[{SEVERITY_MARK.get(finding.severity, finding.severity)}] {finding.title}")
        lines += [f"    - {e}" for e in finding.evidence]
        lines += [f"    > {a}" for a in finding.advice]
    if d.recommendations:
        lines += ["", "Recommended runbooks (ask with /stabilize run, or stabilize plan):"]
        for n, r in enumerate(d.recommendations, start=1):
            lines.append(f"  {n}. {r.label()}: {r.reason}")
    if d.errors:
        lines += ["", "Could not gather:"]
        lines += [f"  - {e}" for e in d.errors]
    return "\n".join(lines)


@click.command("diagnose")
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
@config_option
@handle_errors
def diagnose_command(host: str, as_json: bool, config_file: str | None) -> None:
    """Diagnose HOST now: facts over SSH and from AWS, findings with evidence, and the
    runbooks worth running. Reads only; nothing is posted to Slack. A fact that could not
    be gathered is named under errors. Unknown host: one line, exit 2.

    Example:

        stabilize diagnose prod-web-01 --json
    """
    services = open_services(config_file)
    try:
        try:
            check_host_name(host)
            diagnosis = run_async(diagnose(services, host))
        except InputError as exc:
            services.audit.append(
                cli_actor(), "input.rejected", detail={"what": "diagnose", "error": str(exc)}
            )
            raise
        record(services, diagnosis, requested_by=cli_actor(), post=False)
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(diagnosis.to_dict(), indent=2, default=str))
    else:
        click.echo(format_text(diagnosis))


def register(group: click.Group) -> None:
    group.add_command(diagnose_command)
