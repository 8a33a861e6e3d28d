"""Parse the sectioned output of ``bot.facts_ssh.SCRIPT`` into ``Facts``.

Each section is parsed on its own: a garbled or missing section leaves its fact ``None`` and
adds one line to ``facts.errors``; the others still count. Nothing here raises.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bot.db import iso
from bot.facts import Disk, Facts, Load, Memory, OomKill, Process, Swap, SwapDevice

DAY_S = 86400.0
_MARKER_RE = re.compile(r"^@@stabilize:([a-z]+)@@$")
_KILLED_RE = re.compile(r"Killed process (\d+) \(([^)]*)\)")
_ANON_RE = re.compile(r"anon-rss:\s*(\d+)\s*kB")
_DMESG_RE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\]")
_DMESG_HUMAN_RE = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
_ISO_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?\s")


class Garbled(ValueError):
    """A section did not look like what Linux prints."""


def sections(text: str) -> dict[str, str]:
    """Split the command output at its markers: ``{"meminfo": "...", ...}``."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _MARKER_RE.match(line.strip())
        if match:
            current = found.setdefault(match.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "empty output"
    return line[:160]


def _kib_fields(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?\s*$", line.strip())
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


def parse_memory(text: str) -> tuple[Memory, Swap]:
    fields = _kib_fields(text)
    if "MemTotal" not in fields or fields["MemTotal"] <= 0:
        raise Garbled("no MemTotal")
    if "MemAvailable" in fields:
        memory = Memory(fields["MemTotal"], fields["MemAvailable"])
    elif "MemFree" in fields:
        estimate = fields["MemFree"] + fields.get("Buffers", 0) + fields.get("Cached", 0)
        memory = Memory(fields["MemTotal"], min(estimate, fields["MemTotal"]), True)
    else:
        raise Garbled("no MemAvailable or MemFree")
    if "SwapTotal" not in fields or "SwapFree" not in fields:
        raise Garbled("no SwapTotal/SwapFree")
    return memory, Swap(fields["SwapTotal"], fields["SwapFree"])


def parse_swaps(text: str) -> list[SwapDevice]:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Filename"):
        raise Garbled("no /proc/swaps header")
    devices = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 5:
            raise Garbled(f"swap line {line!r}")
        path = " ".join(parts[:-4]).replace("\\040", " ")
        devices.append(SwapDevice(path, parts[-4], int(parts[-3]), int(parts[-2])))
    return devices


def parse_load(text: str) -> Load:
    parts = text.split()
    if len(parts) < 3:
        raise Garbled("fewer than 3 numbers")
    values = [float(p) for p in parts[:3]]
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise Garbled("load averages are not finite, non-negative numbers")
    return Load(*values)


def parse_uptime(text: str) -> float:
    value = float(text.split()[0])
    if not math.isfinite(value) or value < 0:
        raise Garbled("uptime is not a finite, non-negative number")
    return value


def parse_nproc(text: str) -> int:
    value = int(text.strip().splitlines()[0])
    if value < 1:
        raise Garbled("no CPUs")
    return value


def parse_ps(text: str) -> list[Process]:
    procs = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        try:
            procs.append(Process(int(parts[0]), int(parts[1]), parts[2].strip()))
        except ValueError:
            continue
    if not procs:
        raise Garbled("no process lines")
    procs.sort(key=lambda p: (-p.rss_kib, p.pid))
    return procs


def parse_df(text: str) -> Disk:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Filesystem"):
        raise Garbled("no df header")
    # Parse from the right: the filesystem name may contain spaces.
    parts = " ".join(lines[1:]).split()
    if len(parts) < 6:
        raise Garbled("short df line")
    return Disk(mount=parts[-1], size_kib=int(parts[-5]), free_kib=int(parts[-3]))


def _journal_time(line: str) -> str | None:
    match = _ISO_RE.match(line)
    if not match:
        return None
    zone = (match.group(2) or "+00:00").replace("Z", "+00:00")
    if len(zone) == 5:  # +0000 → +00:00
        zone = zone[:3] + ":" + zone[3:]
    try:
        return iso(datetime.fromisoformat(match.group(1) + zone))
    except ValueError:
        return None


def parse_kernel_log(
    text: str, *, now: float | None, uptime: float | None
) -> tuple[str, list[OomKill]]:
    """``(source, kills)``; ``source`` is journalctl / dmesg. Raises Garbled when unusable."""
    lines = text.splitlines()
    if not lines:
        raise Garbled("no kernel log section")
    head = lines[0].strip()
    if head.startswith("unavailable"):
        reason = head.removeprefix("unavailable").strip() or "no journal and dmesg failed"
        raise Garbled(f"not readable ({reason}); run as a user in the adm or systemd-journal group")
    if not head.startswith("source "):
        raise Garbled(f"unexpected {head[:80]!r}")
    source = head.split(None, 1)[1]
    kills = []
    for line in lines[1:]:
        match = _KILLED_RE.search(line)
        if not match:
            continue
        anon = _ANON_RE.search(line)
        when: str | None = None
        if source == "journalctl":
            when = _journal_time(line)
        else:
            stamp = _DMESG_RE.match(line)
            human = _DMESG_HUMAN_RE.match(line)
            if stamp and uptime is not None:
                age = uptime - float(stamp.group(1))
                if age > DAY_S:
                    continue  # dmesg covers the whole boot; we want the last 24 h
                when = iso(datetime.fromtimestamp((now or time.time()) - max(age, 0.0), UTC))
            elif human:
                try:
                    dt = datetime.strptime(" ".join(human.group(1).split()), "%a %b %d %H:%M:%S %Y")
                except ValueError:
                    dt = None
                if dt is not None:
                    dt = dt.replace(tzinfo=UTC)
                    if (now or time.time()) - dt.timestamp() > DAY_S:
                        continue
                    when = iso(dt)
        kills.append(
            OomKill(
                when=when,
                pid=int(match.group(1)),
                process=match.group(2),
                anon_rss_kib=int(anon.group(1)) if anon else None,
            )
        )
    return source, kills


def _section(
    facts: Facts, parts: dict[str, str], name: str, what: str, parse: Callable[[str], object]
) -> object | None:
    text = parts.get(name)
    if text is None:
        facts.errors.append(f"{what}: missing from the command output (is this a Linux host?)")
        return None
    try:
        return parse(text)
    except (Garbled, ValueError, IndexError) as exc:
        detail = str(exc) if isinstance(exc, Garbled) else _first_line(text)
        facts.errors.append(f"{what}: could not be read ({detail})")
        return None


def parse_into(facts: Facts, text: str, *, via: str = "ssh") -> None:
    """Fill ``facts`` from the command output; unknown facts are named in ``facts.errors``."""
    parts = sections(text)
    if not parts:
        facts.errors.append(
            f"{via}: the command printed nothing usable ({_first_line(text)!r}; is this a Linux"
            " host with a POSIX sh?)"
        )
        return
    if "end" not in parts:
        facts.errors.append(f"{via}: the command output was cut short; later facts may be missing")
    now_text = parts.get("now", "")
    now = float(now_text) if re.fullmatch(r"[0-9]{1,12}", now_text.strip()) else None
    kernel = parts.get("uname", "").strip()
    facts.kernel = kernel.splitlines()[0][:120] if kernel else None

    mem = _section(facts, parts, "meminfo", "memory (/proc/meminfo)", parse_memory)
    if isinstance(mem, tuple):
        facts.memory, facts.swap = mem
        devices = _section(facts, parts, "swaps", "swap devices (/proc/swaps)", parse_swaps)
        if isinstance(devices, list):
            facts.swap = Swap(facts.swap.total_kib, facts.swap.free_kib, devices)
    load = _section(facts, parts, "loadavg", "load (/proc/loadavg)", parse_load)
    facts.load = load if isinstance(load, Load) else None
    uptime = _section(facts, parts, "uptime", "uptime (/proc/uptime)", parse_uptime)
    facts.uptime_s = uptime if isinstance(uptime, float) else None
    cpus = _section(facts, parts, "nproc", "CPU count (nproc)", parse_nproc)
    facts.cpus = cpus if isinstance(cpus, int) else None
    procs = _section(facts, parts, "ps", "processes (ps)", parse_ps)
    facts.processes = procs if isinstance(procs, list) else None
    disk = _section(facts, parts, "df", "free disk on / (df)", parse_df)
    facts.disk_root = disk if isinstance(disk, Disk) else None
    kernel_log = _section(
        facts,
        parts,
        "kernel",
        "OOM kills (kernel log)",
        lambda t: parse_kernel_log(t, now=now, uptime=facts.uptime_s),
    )
    if isinstance(kernel_log, tuple):
        facts.kernel_log, facts.oom_kills = kernel_log
