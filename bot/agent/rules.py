"""What counts as trouble, with hysteresis: a condition fires after it has held for
``hold`` seconds, resolves after it has been clear for ``clear`` seconds, and is never
open twice for the same kind. OOM kills skip all that: each one is an alert at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from bot.agent import probes
from bot.agent.kernel_log import OomKill
from bot.agent.options import AgentConfig

log = logging.getLogger("stabilize.agent")


class Alert:
    """One message for ``/alerts/agent``."""

    def __init__(
        self,
        kind: str,
        severity: str,
        summary: str,
        details: dict[str, Any] | None = None,
        resolved: bool = False,
    ) -> None:
        self.kind = kind
        self.severity = severity
        self.summary = summary
        self.details = details or {}
        self.resolved = resolved

    def body(self, host: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "host": host,
            "kind": self.kind,
            "severity": self.severity,
            "summary": self.summary,
            "details": self.details,
        }
        if self.resolved:
            body["resolved"] = True
        return body


class Finding(NamedTuple):
    """One look at one condition: is it bad now, and how to say it."""

    active: bool
    severity: str
    summary: str
    resolved_summary: str
    details: dict[str, Any]


class Condition:
    """Hysteresis for one kind. ``open`` survives restarts through ``Watcher.open_state``."""

    def __init__(self, kind: str, hold: float, clear: float) -> None:
        self.kind = kind
        self.hold = hold
        self.clear = clear
        self.open: dict[str, Any] | None = None  # {"severity", "summary", "since"} when fired
        self.bad_since: float | None = None
        self.good_since: float | None = None

    def update(self, finding: Finding, now: float, wall: float) -> Alert | None:
        if self.open is None:
            if not finding.active:
                self.bad_since = None
                return None
            self.bad_since = now if self.bad_since is None else self.bad_since
            if now - self.bad_since < self.hold:
                return None
            self.open = {"severity": finding.severity, "summary": finding.summary, "since": wall}
            self.bad_since = self.good_since = None
            return Alert(self.kind, finding.severity, finding.summary, finding.details)
        if finding.active:
            self.good_since = None
            return None
        self.good_since = now if self.good_since is None else self.good_since
        if now - self.good_since < self.clear:
            return None
        details = {**finding.details, "fired_at": self.open.get("since")}
        alert = Alert(self.kind, self.open["severity"], finding.resolved_summary, details, True)
        self.open = None
        self.bad_since = self.good_since = None
        return alert


class Watcher:
    """Runs the checks; ``check(now, wall)`` returns the alerts to send."""

    def __init__(self, config: AgentConfig, open_state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.host = config.host
        self.conditions = {
            kind: Condition(
                kind, config.cpu_hold if kind == "cpu_high" else config.hold, config.clear
            )
            for kind in (
                "memory_pressure",
                "swap_exhausted",
                "cpu_high",
                "disk_full",
                "service_down",
            )
        }
        for kind, state in (open_state or {}).items():
            if kind in self.conditions and isinstance(state, dict) and "severity" in state:
                self.conditions[kind].open = state
        # OOM kills are events: each is sent, and the first opens an alert that resolves
        # after --oom-clear without another kill, so the next bad spell is a new incident.
        oom = (open_state or {}).get("oom_kill")
        self.oom_open: dict[str, Any] | None = oom if isinstance(oom, dict) else None
        self._last_kill: float | None = None
        self._cpu: tuple[int, int] | None = None
        self._said: set[str] = set()
        self._wanted = {probes.comm_name(s): s for s in config.services}

    def open_state(self) -> dict[str, Any]:
        state = {k: c.open for k, c in self.conditions.items() if c.open is not None}
        if self.oom_open is not None:
            state["oom_kill"] = self.oom_open
        return state

    def _checks(self) -> list[tuple[str, Callable[[], Finding | None]]]:
        checks: list[tuple[str, Callable[[], Finding | None]]] = [
            ("memory_pressure", self.memory),
            ("swap_exhausted", self.swap),
            ("cpu_high", self.cpu),
            ("disk_full", self.disk),
        ]
        if self._wanted:
            checks.append(("service_down", self.services))
        return checks

    def check(self, now: float, wall: float) -> list[Alert]:
        alerts = []
        quiet = self.oom_quiet(now)
        if quiet is not None:
            alerts.append(quiet)
        for kind, check in self._checks():
            try:
                finding = check()
            except Exception as exc:  # a broken probe must not stop the others, nor the agent
                self.say_once(kind, f"{kind}: cannot check ({exc}); will keep trying")
                continue
            if finding is None:
                continue
            if self.config.verbose:
                log.info("%s: %s (%s)", kind, "BAD" if finding.active else "ok", finding.details)
            alert = self.conditions[kind].update(finding, now, wall)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def current(self) -> list[Alert]:
        """Every condition that is bad right now, ignoring hysteresis (``--once``)."""
        alerts = []
        for kind, check in self._checks():
            try:
                finding = check()
            except (OSError, ValueError, IndexError) as exc:
                self.say_once(kind, f"{kind}: cannot check ({exc})")
                continue
            if finding is not None and finding.active:
                alerts.append(Alert(kind, finding.severity, finding.summary, finding.details))
        return alerts

    def say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning("%s", message)

    # -- the checks ------------------------------------------------------------------

    def memory_facts(self) -> dict[str, Any]:
        """MemAvailable and swap, for every memory alert (no swap at all is worth saying)."""
        info = probes.read_meminfo(self.config.proc_root)
        total, avail = info["MemTotal"], probes.mem_available_kb(info)
        facts: dict[str, Any] = {
            "mem_total_kb": total,
            "mem_available_kb": avail,
            "mem_available_percent": round(100.0 * avail / total, 1) if total else None,
            "swap_total_kb": info.get("SwapTotal", 0),
            "swap_free_kb": info.get("SwapFree", 0),
        }
        if not facts["swap_total_kb"]:
            facts["swap"] = "none configured"
        return facts

    def memory(self) -> Finding:
        facts = self.memory_facts()
        avail_pct = facts["mem_available_percent"] or 0.0
        cfg = self.config
        try:
            psi = probes.read_psi(cfg.proc_root)
        except (OSError, ValueError) as exc:
            self.say_once(
                "psi", f"memory PSI unavailable ({exc}); judging memory by MemAvailable instead"
            )
            psi = None
        if psi is not None:
            full = psi.full_avg10 or 0.0
            active = psi.some_avg10 >= cfg.psi_some or full >= cfg.psi_full
            critical = full >= cfg.psi_full
            facts.update(source="psi", psi_some_avg10=psi.some_avg10, psi_full_avg10=psi.full_avg10)
            facts.update(threshold={"psi_some": cfg.psi_some, "psi_full": cfg.psi_full})
            summary = (
                f"Memory pressure on {self.host}: tasks stalled on memory {psi.some_avg10:.0f}% "
                f"of the last 10 s ({full:.0f}% fully), {avail_pct:.0f}% of RAM available"
            )
        else:
            active = avail_pct < cfg.mem_available
            critical = avail_pct < cfg.mem_available / 2
            facts.update(source="meminfo", threshold={"mem_available_percent": cfg.mem_available})
            summary = (
                f"Memory low on {self.host}: {avail_pct:.0f}% of RAM available "
                f"({facts['mem_available_kb'] // 1024} MiB)"
            )
        if facts.get("swap"):
            summary += ", no swap"
        return Finding(
            active,
            "critical" if critical else "warning",
            summary,
            f"Memory pressure on {self.host} is over ({avail_pct:.0f}% of RAM available)",
            facts,
        )

    def swap(self) -> Finding:
        facts = self.memory_facts()
        total, free = facts["swap_total_kb"], facts["swap_free_kb"]
        free_pct = 100.0 * free / total if total else 100.0
        facts.update(swap_free_percent=round(free_pct, 1), threshold=self.config.swap_free)
        return Finding(
            bool(total) and free_pct < self.config.swap_free,
            "critical",
            f"Swap exhausted on {self.host}: {free_pct:.0f}% of {total // 1024} MiB free",
            f"Swap on {self.host} is no longer exhausted ({free_pct:.0f}% free)",
            facts,
        )

    def cpu(self) -> Finding | None:
        busy, total = probes.read_cpu_times(self.config.proc_root)
        previous, self._cpu = self._cpu, (busy, total)
        if previous is None or total <= previous[1]:
            return None  # one sample says nothing about now
        pct = 100.0 * (busy - previous[0]) / (total - previous[1])
        facts: dict[str, Any] = {"cpu_busy_percent": round(pct, 1), "threshold": self.config.cpu}
        try:
            facts["loadavg"] = probes.read_loadavg(self.config.proc_root)
        except (OSError, ValueError, IndexError):
            pass
        return Finding(
            pct >= self.config.cpu,
            "warning",
            f"CPU busy on {self.host}: {pct:.0f}% "
            + ("right now" if self.config.once else f"for over {_human(self.config.cpu_hold)}"),
            f"CPU on {self.host} is back to normal ({pct:.0f}% busy)",
            facts,
        )

    def disk(self) -> Finding:
        disk = probes.read_disk(self.config.disk_path)
        pct = disk.free_percent
        facts = {
            "path": disk.path,
            "free_bytes": disk.free_bytes,
            "total_bytes": disk.total_bytes,
            "free_percent": round(pct, 1),
            "threshold": self.config.disk_free,
        }
        return Finding(
            pct < self.config.disk_free,
            "critical" if pct < self.config.disk_free / 2 else "warning",
            f"Disk almost full on {self.host}: {pct:.0f}% free on {disk.path} "
            f"({disk.free_bytes / 2**30:.1f} GiB)",
            f"Disk on {self.host} has room again ({pct:.0f}% free on {disk.path})",
            facts,
        )

    def services(self) -> Finding:
        running = probes.running_names(self.config.proc_root, set(self._wanted))
        missing = sorted(self._wanted[c] for c in self._wanted if c not in running)
        return Finding(
            bool(missing),
            "critical",
            f"Service down on {self.host}: {', '.join(missing)} not running",
            f"Services on {self.host} are running again ({', '.join(self.config.services)})",
            {"missing": missing, "watched": list(self.config.services)},
        )

    def oom_alert(self, kill: OomKill, now: float | None = None, wall: float = 0.0) -> Alert:
        """The alert for one kill; with ``now``, also track the open OOM alert."""
        details: dict[str, Any] = {"victim": kill.name, "pid": kill.pid, "rss_kb": kill.rss_kb}
        details.update(kill.details)
        try:
            details.update(self.memory_facts())
        except (OSError, ValueError):
            pass
        if now is not None:
            self._last_kill = now
            if self.oom_open is None:
                self.oom_open = {"severity": "critical", "since": wall, "kills": 0}
            self.oom_open["kills"] = int(self.oom_open.get("kills", 0)) + 1
            self.oom_open["last_victim"] = kill.name
        return Alert("oom_kill", "critical", kill.summary(self.host), details)

    def oom_quiet(self, now: float) -> Alert | None:
        if self.oom_open is None:
            return None
        if self._last_kill is None:
            self._last_kill = now  # restarted with one open: wait a full quiet period
        if now - self._last_kill < self.config.oom_clear:
            return None
        opened, self.oom_open = self.oom_open, None
        kills = int(opened.get("kills", 1))
        return Alert(
            "oom_kill",
            "critical",
            f"No more OOM kills on {self.host} for {_human(self.config.oom_clear)} "
            f"({kills} kill{'s' if kills != 1 else ''}, the last of {opened.get('last_victim')})",
            {
                "kills": kills,
                "last_victim": opened.get("last_victim"),
                "fired_at": opened.get("since"),
            },
            True,
        )


def _human(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"
