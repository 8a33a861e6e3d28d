"""Delivery: signs each spooled alert at send time and POSTs it to ``/alerts/agent``, oldest
first, one at a time, so the bot sees them in order. An alert leaves the spool only after a
2xx, or after a 4xx that retrying cannot fix (logged, so one bad alert cannot block the rest).
Everything else is retried with exponential backoff and jitter.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import threading
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from bot import __version__
from bot.agent.options import AgentConfig
from bot.agent.spool import Spool

log = logging.getLogger("stabilize.agent")

RETRIABLE_4XX = {401, 408, 429}  # a key fixed on the bot, a slow network, a rate limit
BACKOFF_START = 0.5


def sign(token: str, body: bytes, timestamp: str) -> str:
    """``sha256=<hex HMAC-SHA256 of "v1:<timestamp>:<body>">`` keyed by the webhook token."""
    base = b"v1:" + timestamp.encode() + b":" + body
    return "sha256=" + hmac.new(token.encode(), base, hashlib.sha256).hexdigest()


class Outcome(NamedTuple):
    status: int | None  # None: no HTTP answer at all
    reason: str
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def permanent(self) -> bool:
        """Refused for good: a 4xx that is not about the key, time or rate."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and (self.status not in RETRIABLE_4XX)
        )


def post(config: AgentConfig, body: bytes) -> Outcome:
    """One signed POST. ``http.client`` rather than ``urllib.request``: lighter, and it never
    follows a redirect (which would turn the POST into a GET and lose the alert)."""
    parts = urlsplit(config.url)
    connection = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection(parts.hostname or "", parts.port, timeout=config.timeout)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"stabilize-agent/{__version__}",
        "X-Stabilize-Timestamp": timestamp,
        "X-Stabilize-Signature": sign(config.token, body, timestamp),
    }
    try:
        conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        response = conn.getresponse()
        text = response.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
        status = response.status
        if 200 <= status < 300:
            return Outcome(status, response.reason or "")
        header = (response.getheader("Retry-After") or "").strip()
        retry_after = float(header) if header.isdigit() else None
        if 300 <= status < 400:
            text = f"redirect to {response.getheader('Location', '?')}; use that URL"
        return Outcome(status, text or response.reason or "", retry_after)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Outcome(None, str(exc) or type(exc).__name__)
    finally:
        conn.close()


def explain(config: AgentConfig, outcome: Outcome) -> str:
    """One line for the operator about a failed delivery."""
    if outcome.status == 401:
        return (
            f"{config.url} rejected the signature (401 {outcome.reason}): "
            "STABILIZE_WEBHOOK_TOKEN must be the bot's value"
        )
    if outcome.status in (404, 405):
        return (
            f"{config.url} has no agent endpoint ({outcome.status}): give the bot's base URL, "
            "e.g. https://bot.example.com (the agent adds /alerts/agent)"
        )
    if outcome.status is None:
        return f"cannot reach {config.url}: {outcome.reason}"
    return f"{config.url} answered {outcome.status}: {outcome.reason}"


def check_endpoint(config: AgentConfig, watching: list[str], spooled: int) -> Outcome:
    """Try the endpoint once at start, so a wrong key or URL is a clear error now rather
    than silence later. The hello is a signed ``custom``/``info`` alert that is already
    ``resolved``: the bot verifies and records it, and opens no incident. It is not spooled."""
    hello = {
        "host": config.host,
        "kind": "custom",
        "severity": "info",
        "summary": f"stabilize agent started on {config.host}",
        "details": {
            "hello": True,
            "agent": f"stabilize-agent/{__version__}",
            "watching": watching,
            "spooled": spooled,
        },
        "resolved": True,
    }
    outcome = post(config, json.dumps(hello, separators=(",", ":")).encode())
    if outcome.ok:
        log.info("connected: %s accepted the signed hello", config.url)
    else:
        log.error(
            "error: %s; alerts are kept in %s and sent once it works",
            explain(config, outcome),
            config.spool,
        )
    return outcome


class Sender(threading.Thread):
    """Drains the spool in order; ``wake()`` after each append."""

    def __init__(self, config: AgentConfig, spool: Spool) -> None:
        super().__init__(name="stabilize-agent-sender", daemon=True)
        self.config = config
        self.spool = spool
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.delivered = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            item = self.spool.oldest()
            if item is None:
                self._wake.wait(60)
                self._wake.clear()
                continue
            seq, body = item
            outcome = post(self.config, body)
            if outcome.ok or outcome.permanent:
                if outcome.permanent:
                    log.error(
                        "the bot refused alert #%d for good (%s); dropping it: %s",
                        seq,
                        explain(self.config, outcome),
                        body[:300].decode("utf-8", "replace"),
                    )
                else:
                    self.delivered += 1
                    log.debug("delivered alert #%d", seq)
                self.spool.remove(seq)
                if failures:
                    log.warning("delivering again after %d failed attempt(s)", failures)
                failures = 0
                continue
            failures += 1
            if failures == 1:
                log.warning(
                    "%s; %d alert(s) spooled, retrying with backoff",
                    explain(self.config, outcome),
                    len(self.spool),
                )
            self._stopping.wait(self.backoff(failures, outcome.retry_after))

    def backoff(self, failures: int, retry_after: float | None) -> float:
        """Exponential, capped at ``--retry-max``, with jitter so a fleet of agents does not
        come back in lockstep; a server's Retry-After wins when longer."""
        cap = self.config.retry_max
        ceiling = min(cap, BACKOFF_START * 2 ** min(failures - 1, 30))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 10 * cap))
        return delay
