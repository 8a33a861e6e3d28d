"""``stabilize audit …``: read and verify the audit log."""

from __future__ import annotations

import csv
import json
import re
import sys

import click

from bot.audit import COLUMNS, AuditLog
from bot.config import db_path
from bot.db import Database
from bot.durations import parse_timedelta
from bot.errors import ConfigError, InputError
from commands.common import handle_errors


def open_audit() -> AuditLog:
    path = db_path()
    if not path.exists():
        raise ConfigError(f"no audit database at {path} (set STABILIZE_DB to the bot's database)")
    return AuditLog(Database(path))


@click.group("audit")
def audit() -> None:
    """Review the append-only, hash-chained audit log (STABILIZE_DB)."""


@audit.command("list")
@click.option("--host", help="Only events about this host.")
@click.option("--since", help="Only events newer than this, e.g. 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of rows.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@handle_errors
def audit_list(host: str | None, since: str | None, as_json: bool, as_csv: bool) -> None:
    """List audit events, oldest first.

    Example:

        stabilize audit list --host prod-web-01 --since 24h --json
    """
    if as_json and as_csv:
        raise InputError("choose one of --json and --csv")
    window = parse_timedelta(since) if since else None
    rows = open_audit().list(host=host, since=window)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    else:
        for r in rows:
            parts = [r["ts"], r["actor"], r["action"]]
            parts += [
                f"{k}={r[k]}" for k in ("host", "runbook", "request_id", "incident_id") if r[k]
            ]
            click.echo(f"{r['id']:>6}  " + "  ".join(parts))
        if not rows:
            click.echo("no audit events match", err=True)


def _anchors(values: tuple[str, ...]) -> dict[int, str]:
    anchors: dict[int, str] = {}
    for value in values:
        number, _, digest = value.partition(":")
        if not number.isdigit() or int(number) < 1 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InputError(
                f"--anchor {value!r} is not ID:HASH (copy the 'anchor:' line audit verify printed)"
            )
        anchors[int(number)] = digest
    return anchors


@audit.command("verify")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="ID:HASH",
    help="An event's hash kept outside the database (a printed anchor line); it must still"
    " be in the chain. Repeatable.",
)
@handle_errors
def audit_verify(anchors: tuple[str, ...]) -> None:
    """Check the hash chain; exit 1 naming the first broken event.

    When intact it prints an anchor, the last event's ID:HASH. Keep it where whoever can
    write the database cannot (a Slack message, a ticket): a rewrite that recomputes every
    later hash leaves a consistent chain, but not the same hash for that event.

    Example:

        stabilize audit verify --anchor 1234:5f2c…(64 hex digits)
    """
    expected = _anchors(anchors)
    result = open_audit().verify(expected)
    if result.ok:
        click.echo(str(result) + (f"; {len(expected)} anchor(s) match" if expected else ""))
        if result.anchor:
            click.echo(f"anchor: {result.anchor}")
        return
    click.echo(str(result), err=True)
    sys.exit(1)


@audit.command("timeline")
@click.argument("incident_id")
@click.option("--markdown", is_flag=True, help="Print Markdown for a postmortem document.")
@handle_errors
def audit_timeline(incident_id: str, markdown: bool) -> None:
    """The incident's story: alerts, findings, who asked and approved, steps, outcome.

    Shows when each event happened (and how long after the first alert), who did it, how
    long each runbook step took, and the time to mitigation. The Markdown ends with the
    audit log's anchor (see audit verify --anchor).

    Example:

        stabilize audit timeline 12 --markdown > postmortem-12.md
    """
    from bot import timeline

    log = open_audit()
    story = timeline.build_timeline(log, incident_id)
    if markdown:
        click.echo(timeline.to_markdown(story, log.verify()), nl=False)
        return
    from rich.console import Console

    Console().print(timeline.to_table(story))


@audit.command("browse")
@click.option("--port", default=8001, show_default=True, help="Port on 127.0.0.1.")
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
@handle_errors
def audit_browse(port: int, open_browser: bool) -> None:
    """Review the audit log in Datasette, read-only, with canned queries.

    Queries: incidents, who approved what, failed and rolled-back executions, per host.
    Needs the 'browse' extra: pip install -e '.[browse]'.

    Example:

        stabilize audit browse --port 8001 --open
    """
    from bot import browse

    path = open_audit().db.path
    browse.serve(path, port=port, open_browser=open_browser)


def register(group: click.Group) -> None:
    group.add_command(audit)
