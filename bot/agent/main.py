"""The agent's loop: poll the kernel log every quarter second (an OOM kill goes out at
once), run the checks every ``--interval``, spool every alert, let the sender drain it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.agent.kernel_log import OomParser, Source, open_source, read_through
from bot.agent.options import AgentConfig, AgentConfigError, build_config, parse_argv
from bot.agent.rules import Alert, Watcher

log = logging.getLogger("stabilize.agent")

KERNEL_POLL = 0.25  # seconds between kernel-log reads; bounds how late an OOM alert can be
OOM_SCORE_ADJ = -500
STATE_FILE = "open.json"


def main(argv: list[str] | None = None) -> int:
    """``python3 -m bot.agent …``: argparse in front of ``run``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        config = build_config(parse_argv(args), argv=tuple(args))
    except AgentConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(config)


def run(config: AgentConfig) -> int:
    """Run the agent with a built config; returns the exit code."""
    if config.print_systemd_unit:
        from bot.agent.unit import render

        sys.stdout.write(render(config))
        return 0
    logging.basicConfig(
        level=logging.DEBUG if config.verbose else logging.INFO,
        format="%(asctime)s stabilize-agent %(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,  # under `stabilize agent` the CLI has set up logging (warnings) already
    )
    if config.once:
        return once(config)
    try:
        agent = Agent(config)
    except OSError as exc:
        log.error("error: cannot use the spool %s (%s); choose one with --spool", config.spool, exc)
        return 2
    return agent.run()


def observed(alert: Alert, host: str) -> dict[str, Any]:
    body = alert.body(host)
    body["details"] = {
        **alert.details,
        "observed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    return body


def once(config: AgentConfig) -> int:
    """Check once and print each alert that would be sent, as JSON lines. OOM kills are
    those the kernel log dates within the last ``--interval`` (all of them when it cannot
    date them), so ``--once --interval 5m`` from cron every 5 minutes sees each kill once."""
    watcher = Watcher(config)
    try:
        watcher.cpu()  # CPU needs two samples
        time.sleep(min(1.0, config.interval))
    except (OSError, ValueError, IndexError):
        pass
    alerts = watcher.current()
    source = open_source(config.kernel_log, from_start=True)
    parser = OomParser()
    kills = []
    try:
        for line in read_through(source):
            kills += parser.feed(line, 0.0)
        kills += parser.flush(float("inf"))
    finally:
        source.close()
    since = None
    try:
        since = _uptime(config.proc_root) - config.interval
    except (OSError, ValueError, IndexError):
        pass
    for kill in kills:
        if since is None or kill.kernel_time is None or kill.kernel_time >= since:
            alerts.append(watcher.oom_alert(kill))
    for alert in alerts:
        print(json.dumps(observed(alert, config.host), separators=(",", ":")), flush=True)
    return 0


def _uptime(proc_root: Path) -> float:
    from bot.agent.probes import read_uptime

    return read_uptime(proc_root)


def lower_oom_score() -> None:
    """Make the agent a late OOM victim: the reporter should outlive what it reports.
    Lowering needs privilege (systemd's OOMScoreAdjust does it for the unit); failing is fine."""
    path = "/proc/self/oom_score_adj"
    try:
        with open(path) as fh:
            if int(fh.read().strip() or 0) <= OOM_SCORE_ADJ:
                return
        with open(path, "w") as fh:
            fh.write(str(OOM_SCORE_ADJ))
    except (OSError, ValueError) as exc:
        log.debug("cannot lower oom_score_adj (%s); continuing", exc)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        from bot.agent.sender import Sender
        from bot.agent.spool import Spool

        self.config = config
        self.stop = threading.Event()
        self.spool = Spool(config.spool, config.spool_max)
        self.state_path = config.spool / STATE_FILE
        self.watcher = Watcher(config, self._load_state())
        self.sender = Sender(config, self.spool)
        self.parser = OomParser()

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.watcher.open_state()))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("cannot save open alerts to %s: %s", self.state_path, exc)

    def enqueue(self, alert: Alert) -> None:
        seq = self.spool.append(observed(alert, self.config.host))
        state = "resolved" if alert.resolved else alert.severity
        log.info("alert #%d %s (%s): %s", seq, alert.kind, state, alert.summary)
        self.sender.wake()

    def _read_kernel_log(self, source: Source, now: float) -> None:
        try:
            kills = []
            for line in source.poll():
                kills += self.parser.feed(line, now)
            kills += self.parser.flush(now)
        except Exception:  # a line nobody foresaw must not end the watching
            self.watcher.say_once("kernel-log-bug", "could not parse the kernel log; skipping")
            log.debug("kernel log parsing failed", exc_info=True)
            return
        for kill in kills:
            self.enqueue(self.watcher.oom_alert(kill, now, time.time()))
        if kills:
            self._save_state()

    def run(self) -> int:
        from bot.agent.sender import check_endpoint

        config = self.config
        lower_oom_score()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        source = open_source(config.kernel_log)
        watching = ["memory", "swap", "cpu", f"disk {config.disk_path}"]
        watching += [f"oom_kill via {source.name}"] if source.name != "none" else []
        watching += [f"service {s}" for s in config.services]
        log.info("watching %s on %s every %gs", ", ".join(watching), config.host, config.interval)
        check_endpoint(config, watching, len(self.spool))
        self.sender.start()
        next_check = time.monotonic()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                self._read_kernel_log(source, now)
                if now >= next_check:
                    alerts = self.watcher.check(now, time.time())
                    for alert in alerts:
                        self.enqueue(alert)
                    if alerts:
                        self._save_state()
                    next_check = max(next_check + config.interval, now)
                self.stop.wait(max(0.0, min(KERNEL_POLL, next_check - time.monotonic())))
        finally:
            source.close()
            self.sender.stop()
            self.sender.join(timeout=2)
        log.info("stopped; %d alert(s) left in the spool", len(self.spool))
        return 0
