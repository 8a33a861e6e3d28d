"""Fixtures of the hardening suite: the real bot served on 127.0.0.1 with every outside
component it could touch (sshd, moto, the Slack stand-in, an SNS certificate server) counted,
so a test can say "this request changed nothing anywhere".

``hostile`` (fixture) → ``Hostile``: ``await hostile.post(route, body, headers)``,
``snap = hostile.snapshot()`` then ``hostile.changes(snap)`` → what happened since, by place
(empty dict = no side effect beyond the ``auth.rejected`` / ``input.rejected`` audit rows).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port
from intake_fixtures import TOPIC, CertServer, SnsSigner, _sns_keys, sns_cert_server  # noqa: F401
from runbook_fixtures import FAST

from bot import runs
from bot.config import Secrets
from bot.server import build_web_app
from bot.services import Services, build_services
from runbooks.engine import Engine

HOST = "prod-web-01"
INSTANCE = "i-0123456789abcdef0"
APP_TOKEN = "xapp-1-A0STABILIZE-0000000000001-hardeningAPPtoken9f3c"  # noqa: S105 - fake
REJECTIONS = frozenset({"auth.rejected", "input.rejected"})
# Tables whose rows are bookkeeping of a *signed* Slack delivery (Slack-retry dedup), not state.
BOOKKEEPING = frozenset({"slack_deliveries"})
# Slack methods that only read: asking Slack is not a side effect (the outbox looks a retried
# post up before posting it again).
READ_ONLY_SLACK = frozenset(
    {"conversations.replies", "conversations.history", "users.info", "auth.test", "api.test"}
)


@dataclass
class Snapshot:
    tables: dict[str, int]
    audit_id: int
    sshd_mark: int
    aws: int
    slack: int
    cert_hits: int


@dataclass
class Hostile:
    """The running bot and the counters around it."""

    url: str
    services: Services
    session: aiohttp.ClientSession
    sshd: Any
    moto: Any
    slack: Any
    certs: CertServer
    sentinel_dir: Path
    first_snapshot: Snapshot | None = None
    log_records: list[logging.LogRecord] = field(default_factory=list)

    async def post(
        self,
        route: str,
        body: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        method: str = "POST",
    ) -> tuple[int, str]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        async with self.session.request(
            method, self.url + route, data=data, headers=headers or {}
        ) as resp:
            return resp.status, await resp.text()

    def tables(self) -> dict[str, int]:
        names = [
            r["name"]
            for r in self.services.db.query(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            n: int(self.services.db.query_one(f'SELECT count(*) AS c FROM "{n}"')["c"])
            for n in names
        }

    def snapshot(self) -> Snapshot:
        last = self.services.db.query_one("SELECT max(id) AS m FROM audit_events")
        return Snapshot(
            tables=self.tables(),
            audit_id=int(last["m"] or 0),
            sshd_mark=self.sshd.mark(),
            aws=self.moto.count(),
            slack=len(self.slack.calls()),
            cert_hits=len(self.certs.hits),
        )

    def new_audit(self, snap: Snapshot) -> list[dict[str, Any]]:
        return self.services.db.query(
            "SELECT * FROM audit_events WHERE id > ? ORDER BY id", (snap.audit_id,)
        )

    def changes(
        self,
        snap: Snapshot,
        *,
        allow: frozenset[str] = frozenset(),
        cert_fetch: bool = False,
        slack_methods: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Everything that changed since ``snap`` other than rejection audit rows.

        ``allow``: tables that may grow (bookkeeping); ``cert_fetch``: fetching the SNS
        signing certificate is part of checking a signature, not a side effect;
        ``slack_methods``: stand-in calls that are the answer to the person (response_url).
        """
        out: dict[str, Any] = {}
        now = self.tables()
        grown = {
            t: now[t] - snap.tables.get(t, 0)
            for t in now
            if t not in allow | {"audit_events"} and now[t] != snap.tables.get(t, 0)
        }
        if grown:
            out["tables"] = grown
        other = [r["action"] for r in self.new_audit(snap) if r["action"] not in REJECTIONS]
        if other:
            out["audit"] = other
        ssh = self.sshd.connections(snap.sshd_mark)
        if ssh:
            out["ssh_connections"] = ssh
        aws = self.moto.count() - snap.aws
        if aws:
            out["aws_calls"] = aws
        calls = [
            f"{c.method}: {str(c.args.get('text', ''))[:80]}"
            for c in self.slack.calls()[snap.slack :]
            if c.method not in slack_methods | READ_ONLY_SLACK
        ]
        if calls:
            out["slack_calls"] = calls
        if not cert_fetch and len(self.certs.hits) != snap.cert_hits:
            out["cert_fetches"] = self.certs.hits[snap.cert_hits :]
        pwned = sorted(p.name for p in self.sentinel_dir.iterdir())
        if pwned:
            out["sentinel_files"] = pwned
        return out

    async def settle(self) -> None:
        """Let anything that was wrongly started after an answer show itself."""
        from bot import incidents

        await asyncio.sleep(0.3)
        for _ in range(3):
            await runs.wait_idle(10)
            pending = mine(incidents._running)
            if pending:
                await asyncio.wait(pending, timeout=30)
            await self.services.outbox.drain(10)
        # Then until quiet: nothing running, nothing queued, no new Slack call for 0.5 s.
        deadline = time.monotonic() + 20
        seen = -1
        while time.monotonic() < deadline:
            calls = len(self.slack.calls())
            busy = bool(mine(incidents._running)) or self.services.outbox.pending()
            if calls == seen and not busy:
                return
            seen = calls
            await asyncio.sleep(0.5)


def mine(tasks: set[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    """The unfinished tasks of this test's event loop: earlier tests' loops are closed, and a
    task left pending on a closed loop never finishes."""
    loop = asyncio.get_running_loop()
    return [t for t in tasks if not t.done() and t.get_loop() is loop]


class _Collect(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


def hostile_settings(sshd: Any, certs: CertServer, **extra: Any) -> dict[str, Any]:
    return {
        "slack": {"channel": "C0ALERTS"},
        "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
        "aws": {"region": "us-east-1"},
        "hosts": {HOST: {**sshd.host_config(), "instance_id": INSTANCE}},
        "sns": {
            "topics": [TOPIC],
            "cert_url_pattern": "^" + re.escape(certs.signer.base_url) + "/",
        },
        **extra,
    }


@pytest.fixture
async def hostile(
    tmp_path: Path,
    sshd: Any,
    aws_env: Any,
    slack_api: Any,
    slack_signer: Any,
    agent_signer: Any,
    sns_cert_server: CertServer,  # noqa: F811
) -> AsyncIterator[Hostile]:
    """The real ``stabilize`` web app (background jobs, real engine, real diagnosis)."""
    from bot.config import parse_settings

    settings = parse_settings(hostile_settings(sshd, sns_cert_server), source="<hardening>")
    secrets = Secrets(
        slack_bot_token=slack_api.token,
        slack_signing_secret=slack_signer.secret,
        slack_app_token=APP_TOKEN,
        webhook_token=agent_signer.token,
        slack_api_url=slack_api.url,
    )
    services = build_services(settings, secrets, tmp_path / "stabilize.db")
    services.engine = Engine(timing=FAST)
    services.outbox.post_interval = 0.0
    services.outbox.update_interval = 0.0
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    runner = web.AppRunner(build_web_app(services), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    session = aiohttp.ClientSession()
    bot = Hostile(
        url=f"http://127.0.0.1:{port}",
        services=services,
        session=session,
        sshd=sshd,
        moto=aws_env,
        slack=slack_api,
        certs=sns_cert_server,
        sentinel_dir=sentinel,
        log_records=records,
    )
    try:
        yield bot
    finally:
        await session.close()
        await runs.wait_idle(10)
        await runner.cleanup()
        services.close()
        root.removeHandler(handler)
        root.setLevel(old_level)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures of this run (for the README's Reliability section), when any were made."""
    import sys

    def grab(module: str, name: str) -> Any:
        return getattr(sys.modules.get(module), name, None)

    tally = grab("test_hostile_http", "TALLY")
    runs = grab("test_fuzz", "RUNS")
    races = grab("test_approval_attacks", "RACES")
    faults = grab("test_faults", "FAULTS")
    if not any([tally and tally.tried, runs, races, faults]):
        return
    write = terminalreporter.write_line
    terminalreporter.section("hardening figures")
    if tally is not None:
        write(f"hostile requests tried: {tally.tried}, failing: {len(tally.failures)}")
    if runs:
        write(f"fuzz examples: {sum(runs.values())} over {len(runs)} properties {runs}")
    if races:
        write(f"races run: {sum(races.values())} {races}")
    if faults:
        write(f"faults injected: {sum(faults.values())} {faults}")
