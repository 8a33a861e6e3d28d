"""The one object every handler receives: settings, secrets, the database and its helpers.

Built once by ``build_services`` (no side effects at import time); tests build a fresh one
per test. Components that other modules own hang off it as plain attributes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bot.audit import AuditLog
from bot.config import Secrets, Settings
from bot.db import Database
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.transport import SlackTransport, Transport, make_web_client


@dataclass
class Services:
    settings: Settings
    secrets: Secrets
    db: Database
    audit: AuditLog
    outbox: Outbox
    metrics: Metrics
    transport: Transport | None = None
    # Set by the runbook engine / CLI when the bot must only post plans.
    dry_run: bool = False
    # The runbook engine (runbooks.engine.Engine): validate / plan / format_plan / execute /
    # lock_holder. Tests of the approval flow put a stand-in here.
    engine: Any = None
    _aws_session: Any = field(default=None, repr=False)
    _aws_clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _aws_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def aws(self, service: str) -> Any:
        """A boto3 client for ``service`` in the configured region (``AWS_ENDPOINT_URL`` is
        honoured by boto3 itself). Clients are thread-safe and cached; sessions are not, so
        client creation is serialised."""
        with self._aws_lock:
            client = self._aws_clients.get(service)
            if client is None:
                if self._aws_session is None:
                    self._aws_session = boto3.session.Session(region_name=self.settings.aws.region)
                client = self._aws_session.client(service)
                self._aws_clients[service] = client
            return client

    def close(self) -> None:
        self.db.close()


def build_services(
    settings: Settings,
    secrets: Secrets,
    db_file: str | Path,
    *,
    transport: Transport | None = None,
    slack: bool = True,
    dry_run: bool | None = None,
) -> Services:
    """Wire the bot together. ``transport`` overrides Slack (the shell, the demo, tests);
    ``slack=False`` builds without any transport (CLI commands that only read)."""
    db = Database(db_file)
    metrics = Metrics()
    audit = AuditLog(db, secrets=secrets.values())
    if transport is None and slack and secrets.slack_bot_token:
        transport = SlackTransport(
            make_web_client(secrets),
            on_error=lambda method, error: metrics.slack_errors.labels(method, error).inc(),
        )
    outbox = Outbox(
        db,
        transport,
        on_delivered=lambda op, key: metrics.slack_delivered.labels(op).inc(),
    )
    return Services(
        engine=_default_engine(),
        settings=settings,
        secrets=secrets,
        db=db,
        audit=audit,
        outbox=outbox,
        metrics=metrics,
        transport=transport,
        dry_run=settings.dry_run if dry_run is None else dry_run,
    )


def _default_engine() -> Any:
    try:
        from runbooks.engine import Engine  # type: ignore[attr-defined]
    except ImportError:  # the engine is being written; approvals then refuse to run
        return None
    return Engine()
