"""The ``stabilize`` command line. Each command family lives in its own module and exposes
``register(group)``; this file only assembles them."""

from __future__ import annotations

import importlib
import logging
import os

import click

from bot import __version__

# Modules that add commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "commands.serve",
    "commands.shell",
    "commands.config_cli",
    "commands.diagnose",
    "commands.demo",
    "commands.runbooks_cli",
    "commands.audit_cli",
    "commands.manifest",
    "commands.agent",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stabilize")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
def main(verbose: bool) -> None:
    """stabilize: a ChatOps incident bot for Slack — alerts, diagnosis, approved runbooks,
    and a hash-chained audit log.

    Secrets come from the environment (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN,
    STABILIZE_WEBHOOK_TOKEN); the database from STABILIZE_DB (default ./stabilize.db).
    """
    debug = verbose or bool(os.environ.get("STABILIZE_DEBUG"))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # paramiko logs each failure it raises to us (a host too busy for a handshake…) at
        # ERROR, traceback included, from its own thread; we report each as one line.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue  # a command family not written yet
    _module.register(main)


if __name__ == "__main__":
    main()
