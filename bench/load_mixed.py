"""Sustained mixed load against a real ``stabilize serve``: signed agent alerts, slash commands
and approve clicks at a bounded rate, all over loopback, with a local Slack stand-in.

    .venv/bin/python bench/load_mixed.py [--seconds 60] [--rate 30] [--slack-outage 30] [--json]

Reports the ack latency (p50/p99, per kind), the server's RSS before and after, and checks
that nothing was lost: every alert answered 200 is in the audit log, every click got its
answer at its response_url. Exit 1 if anything was lost or a request got a 5xx.

The bot runs in dry-run mode (an approved runbook posts its plan and changes nothing) with an
inventory whose SSH port is closed on 127.0.0.1, so diagnoses fail fast and nothing leaves
the machine. The hardening suite runs the same driver for ~12 s (tests/hardening/test_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from helpers import free_port, stop_process, wait_for_port  # noqa: E402
from helpers.signers import AgentSigner, SlackSigner  # noqa: E402
from slack_standin import SlackStandIn  # noqa: E402

HOSTS = [f"load-{n:02d}" for n in range(8)]
KINDS = ("memory_pressure", "cpu_high", "disk_full")
MAX_IN_FLIGHT = 64
REQUEST_ID_RE = re.compile(r"R-[0-9a-f]{10}")


@dataclass
class Figures:
    seconds: float = 0.0
    rate: float = 0.0
    sent: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    alerts_accepted: int = 0
    alerts_in_audit: int = 0
    clicks: int = 0
    clicks_answered: int = 0
    requests_created: int = 0
    executions: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    outage: float = 0.0
    drain_seconds: float = 0.0
    pending_after: int = 0
    slack_refused: int = 0
    incident_messages_expected: int = 0
    incident_messages_posted: int = 0
    duplicate_posts: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1
        self.latencies.setdefault(kind, []).append(seconds)
        key = f"{kind} {status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def all_latencies(self) -> list[float]:
        return sorted(x for v in self.latencies.values() for x in v)

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        if not values:
            return 0.0
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def lost(self) -> int:
        missing = self.incident_messages_expected - self.incident_messages_posted
        return (
            (self.alerts_accepted - self.alerts_in_audit)
            + (self.clicks - self.clicks_answered)
            + max(missing, 0)
        )

    def summary(self) -> dict[str, Any]:
        every = self.all_latencies()
        return {
            "seconds": round(self.seconds, 1),
            "rate_per_s": self.rate,
            "requests": len(every),
            "sent": self.sent,
            "statuses": self.statuses,
            "ack_ms": {
                "p50": round(self.pct(every, 0.50) * 1000, 1),
                "p99": round(self.pct(every, 0.99) * 1000, 1),
                "max": round(max(every, default=0) * 1000, 1),
                **{
                    f"{kind}_p99": round(self.pct(v, 0.99) * 1000, 1)
                    for kind, v in self.latencies.items()
                },
            },
            "alerts_accepted": self.alerts_accepted,
            "alerts_in_audit": self.alerts_in_audit,
            "clicks": self.clicks,
            "clicks_answered": self.clicks_answered,
            "requests_created": self.requests_created,
            "executions": self.executions,
            "rss_kib": {"before": self.rss_before_kib, "after": self.rss_after_kib},
            "slack_outage_s": self.outage,
            "drain_s": round(self.drain_seconds, 1),
            "outbox_pending_after": self.pending_after,
            "slack_calls_refused": self.slack_refused,
            "incident_messages": {
                "expected": self.incident_messages_expected,
                "posted": self.incident_messages_posted,
                "duplicates": self.duplicate_posts,
            },
            "lost": self.lost,
            "errors": self.errors[:10],
        }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    """``stabilize serve`` as its own process, configured for the load."""

    def __init__(self, workdir: Path, slack: SlackStandIn, slack_signer: SlackSigner, token: str):
        self.workdir = workdir
        self.port = free_port()
        self.db = workdir / "load.db"
        config = {
            "slack": {"channel": "C0ALERTS"},
            "approvals": {"approvers": ["U0ALICE", "U0BOB"], "expires_after": "1h"},
            "dry_run": True,
            "hosts": {
                h: {"ssh": {"host": "127.0.0.1", "port": 9, "user": "nobody"}} for h in HOSTS
            },
            "ssh": {"connect_timeout": "1s"},
        }
        (workdir / "stabilize.yaml").write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_SIGNING_SECRET": slack_signer.secret,
            "SLACK_API_URL": slack.url,
            "STABILIZE_WEBHOOK_TOKEN": token,
            "STABILIZE_DB": str(self.db),
            "STABILIZE_CONFIG": str(workdir / "stabilize.yaml"),
            # Nothing may leave the machine: AWS calls (if any) hit a closed loopback port.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "load",
            "AWS_SECRET_ACCESS_KEY": "load",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        stabilize = Path(sys.executable).parent / "stabilize"
        log = open(self.workdir / "serve.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [str(stabilize), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        process = self.process
        wait_for_port(self.port, timeout=30, alive=lambda: process.poll() is None)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout=15)
        self.process = None


async def drive(
    server: Server,
    slack: SlackStandIn,
    slack_signer: SlackSigner,
    agent: AgentSigner,
    *,
    seconds: float,
    rate: float,
    seed: int = 1,
    outage: float = 0.0,
) -> Figures:
    """Open-loop load: one request every 1/rate s (at most MAX_IN_FLIGHT outstanding).
    ``outage``: Slack answers 503 for its first 60 % and 429 (Retry-After 1) for the rest."""
    rng = random.Random(seed)
    figures = Figures(seconds=seconds, rate=rate, outage=outage)
    if outage:
        slack.fail_for(outage * 0.6, status=503)
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    click_urls: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    sizes = iter(range(1, 10**6))

    def pending_requests() -> list[str]:
        found = []
        for message in slack.messages("C0ALERTS"):
            text = message.get("text", "")
            if "Approval request" in text or "approval" in text.lower():
                found += REQUEST_ID_RE.findall(text)
        return found

    async def send(session: aiohttp.ClientSession, kind: str, route: str, body, headers) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                async with session.post(server.url + route, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                figures.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                status = 0
            figures.record(kind, status, time.perf_counter() - started)
            if kind == "alert" and status == 200:
                figures.alerts_accepted += 1
            if status >= 500 or status == 0:
                figures.errors.append(f"{kind}: HTTP {status}")

    def one(session: aiohttp.ClientSession) -> asyncio.Task[None]:
        roll = rng.random()
        if roll < 0.6:
            alert = agent.alert(
                host=rng.choice(HOSTS),
                kind=rng.choice(KINDS),
                severity=rng.choice(("warning", "critical")),
                summary=f"load #{figures.sent.get('alert', 0)}",
                resolved=rng.random() < 0.1,
            )
            body, headers = agent.sign(alert)
            coro = send(session, "alert", "/alerts/agent", body, headers)
        elif roll < 0.85:
            text = rng.choice(
                [
                    "help",
                    "audit",
                    f"audit {rng.choice(HOSTS)} 1h",
                    f"run add-swap {rng.choice(HOSTS)} size={next(sizes) % 60 + 1}G",
                ]
            )
            user = rng.choice(("U0CAROL", "U0DAN"))
            body = slack_signer.slash_command(text, user_id=user)
            coro = send(session, "command", "/slack/events", body, slack_signer.headers(body))
        else:
            ids = pending_requests()
            value = rng.choice(ids[-3:]) if ids else "R-0000000000"  # the newest: pending
            url = slack.response_url()
            click_urls.append(url)
            user = rng.choice(("U0ALICE", "U0BOB", "U0MALLORY"))
            action = "approve_request" if rng.random() < 0.85 else "reject_request"
            body = slack_signer.block_actions(action, value, user_id=user, response_url=url)
            figures.clicks += 1
            coro = send(session, "click", "/slack/events", body, slack_signer.headers(body))
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()
        n = 0
        limited = not outage
        while True:
            due = start + n / rate
            now = time.monotonic()
            if due - start >= seconds:
                break
            if not limited and now - start >= outage * 0.6:
                slack.fail_for(outage * 0.4, status=429, retry_after=1)
                limited = True
            if due > now:
                await asyncio.sleep(due - now)
            one(session)
            n += 1
        if tasks:
            await asyncio.wait(list(tasks), timeout=60)

    # Every click is answered at its response_url (the reply or the replaced message).
    deadline = time.monotonic() + 30
    while True:
        answered = sum(1 for url in click_urls if slack.responses(url))
        if answered == len(click_urls) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    figures.clicks_answered = answered
    figures.seconds = time.monotonic() - start
    return figures


def outbox_pending(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()


def count_messages(db: Path, slack: SlackStandIn, figures: Figures, *, complete: bool) -> None:
    """No key was posted twice; with ``complete``, every incident got its one message."""
    keys = [
        ((m.get("metadata") or {}).get("event_payload") or {}).get("key") for m in slack.messages()
    ]
    keys = [k for k in keys if k]
    figures.duplicate_posts = len(keys) - len(set(keys))
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        incidents = [r[0] for r in conn.execute("SELECT id FROM incidents")]
    finally:
        conn.close()
    posted = len(set(keys) & {f"incident:{i}" for i in incidents})
    figures.incident_messages_posted = posted
    figures.incident_messages_expected = len(incidents) if complete else posted
    figures.slack_refused = sum(1 for c in slack.calls() if c.status != 200)


def count_in_db(db: Path, figures: Figures) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        figures.alerts_in_audit = conn.execute(
            "SELECT count(*) FROM audit_events"
            " WHERE action IN ('alert.received', 'alert.deduplicated') AND actor = 'agent'"
        ).fetchone()[0]
        figures.requests_created = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        figures.executions = conn.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'execution.started'"
        ).fetchone()[0]
    finally:
        conn.close()


async def run(
    seconds: float,
    rate: float,
    workdir: Path | None = None,
    outage: float = 0.0,
    drain: float = 900.0,
) -> Figures:
    """Start the stand-in and the server, drive the load, count, stop; return the figures."""
    with tempfile.TemporaryDirectory(prefix="stabilize-load-") as tmp:
        directory = workdir or Path(tmp)
        with SlackStandIn() as slack:
            slack_signer = SlackSigner(response_url=slack.response_url)
            agent = AgentSigner()
            server = Server(directory, slack, slack_signer, agent.token).start()
            try:
                assert server.process is not None
                # Warm up (imports, the Bolt app) before measuring the baseline RSS.
                async with aiohttp.ClientSession() as session:
                    body = slack_signer.slash_command("help")
                    await session.post(
                        server.url + "/slack/events", data=body, headers=slack_signer.headers(body)
                    )
                    await session.get(server.url + "/healthz")
                before = rss_kib(server.process.pid)
                figures = await drive(
                    server, slack, slack_signer, agent, seconds=seconds, rate=rate, outage=outage
                )
                figures.rss_before_kib = before
                figures.rss_after_kib = rss_kib(server.process.pid)
                # Let the outbox deliver what queued (during an outage: everything). Slack
                # takes one message per second per channel, so a backlog of posts drains at
                # that pace; ``drain=0`` skips the wait and the completeness count.
                drained_at = time.monotonic()
                deadline = drained_at + drain
                while outbox_pending(server.db) and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                figures.drain_seconds = time.monotonic() - drained_at
                figures.pending_after = outbox_pending(server.db)
                count_messages(server.db, slack, figures, complete=drain > 0)
            finally:
                server.stop()
            count_in_db(server.db, figures)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second")
    parser.add_argument(
        "--slack-outage",
        type=float,
        default=0.0,
        help="seconds at the start during which Slack answers 503, then 429",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    if not (0 < args.rate <= 500 and 0 < args.seconds <= 3600):
        parser.error("--rate must be in (0, 500] and --seconds in (0, 3600]")
    if not 0 <= args.slack_outage <= args.seconds:
        parser.error("--slack-outage must be between 0 and --seconds")
    figures = asyncio.run(run(args.seconds, args.rate, outage=args.slack_outage))
    summary = figures.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        ack = summary["ack_ms"]
        print(
            f"{summary['requests']} requests in {summary['seconds']} s at {args.rate}/s: "
            f"ack p50 {ack['p50']} ms, p99 {ack['p99']} ms, max {ack['max']} ms"
        )
        print(f"per kind: { {k: v for k, v in ack.items() if k.endswith('_p99')} }")
        print(f"statuses: {summary['statuses']}")
        print(
            f"alerts accepted {figures.alerts_accepted}, in the audit log"
            f" {figures.alerts_in_audit}; clicks {figures.clicks}, answered"
            f" {figures.clicks_answered}; requests {figures.requests_created},"
            f" dry-run executions {figures.executions}"
        )
        print(
            f"RSS {figures.rss_before_kib} KiB before, {figures.rss_after_kib} KiB after"
            f" ({statistics.fmean([figures.rss_after_kib, figures.rss_before_kib]):.0f} mean)"
        )
        print(
            f"Slack: {figures.slack_refused} calls refused during a {figures.outage:g} s outage;"
            f" incident messages {figures.incident_messages_posted} of"
            f" {figures.incident_messages_expected}, duplicates {figures.duplicate_posts};"
            f" the outbox drained {figures.drain_seconds:.0f} s after the load"
            f" ({figures.pending_after} left)"
        )
        print(f"lost: {figures.lost}; errors: {len(figures.errors)}")
    failed = figures.lost or figures.errors or figures.duplicate_posts or figures.pending_after
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
