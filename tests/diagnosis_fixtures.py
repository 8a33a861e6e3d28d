"""Fact sets and command outputs for the diagnosis tests (tests/payloads/diagnosis/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.facts import (
    AutoScalingGroup,
    Disk,
    Facts,
    Instance,
    InstanceType,
    Load,
    Memory,
    MetricStats,
    OomKill,
    Process,
    Swap,
)

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "diagnosis"


def output(name: str) -> str:
    """A recorded command output, e.g. ``output("journal_oom")``."""
    return (PAYLOADS / f"output_{name}.txt").read_text()


def facts(name: str, host: str = "prod-web-01") -> Facts:
    """A fact set from ``facts_<name>.json`` (see the ``_about`` key of each file)."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"facts_{name}.json").read_text())
    f = Facts(host=host, source="fixture", ssh_status=data.get("ssh_status", "ok"))
    if "memory" in data:
        f.memory = Memory(**data["memory"])
    if "swap" in data:
        f.swap = Swap(**data["swap"])
    if "load" in data:
        f.load = Load(*data["load"])
    f.cpus = data.get("cpus")
    if "processes" in data:
        f.processes = sorted(
            (Process(*p) for p in data["processes"]), key=lambda p: (-p.rss_kib, p.pid)
        )
    if "oom_kills" in data:
        f.oom_kills = [OomKill(**k) for k in data["oom_kills"]]
        f.kernel_log = "journalctl"
    if "disk_root" in data:
        f.disk_root = Disk(**data["disk_root"])
    if "instance" in data:
        f.instance = Instance(**data["instance"])
        f.aws_status = "ok"
    if "family_types" in data:
        f.family_types = [
            InstanceType(t["name"], t["vcpus"], t["memory_mib"], tuple(t["architectures"]))
            for t in data["family_types"]
        ]
    if "cpu" in data:
        f.cpu = MetricStats(**data["cpu"])
    if "asg" in data:
        f.asg = AutoScalingGroup(**data["asg"])
    f.errors = list(data.get("errors", []))
    return f


def make_services(settings: Any, tmp_path: Path) -> Any:
    """Services over a fresh database in ``tmp_path``, no Slack transport."""
    from bot.config import Secrets
    from bot.services import build_services

    return build_services(settings, Secrets(), tmp_path / "stabilize.db", slack=False)
