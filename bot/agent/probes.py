"""Read-only probes of the host: small files under ``/proc`` (or a prepared copy) and
``statvfs``. Each returns plain numbers or raises ``OSError``/``ValueError``; the caller
decides what a failure means."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

_MAX_READ = 64 * 1024  # no file we read is bigger; a broken one must not eat memory


def read_small(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(_MAX_READ).decode("utf-8", "replace")


class Psi(NamedTuple):
    some_avg10: float
    full_avg10: float | None  # the "full" line is missing on some kernels


def read_psi(proc_root: Path) -> Psi:
    """``pressure/memory``: ``some avg10=1.23 avg60=… total=…`` and ``full …``."""
    values: dict[str, float] = {}
    for line in read_small(proc_root / "pressure" / "memory").splitlines():
        kind, _, rest = line.partition(" ")
        for pair in rest.split():
            name, _, number = pair.partition("=")
            if name == "avg10":
                values[kind] = float(number)
    if "some" not in values:
        raise ValueError("no 'some avg10=' in pressure/memory")
    return Psi(values["some"], values.get("full"))


def read_meminfo(proc_root: Path) -> dict[str, int]:
    """``meminfo`` as kB numbers: ``{"MemTotal": …, "MemAvailable": …, "SwapTotal": …}``."""
    out: dict[str, int] = {}
    for line in read_small(proc_root / "meminfo").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name.strip()] = int(fields[0])
    if "MemTotal" not in out:
        raise ValueError("no MemTotal in meminfo")
    return out


def mem_available_kb(meminfo: dict[str, int]) -> int:
    """MemAvailable; kernels before 3.14 lack it, so estimate it from free + caches."""
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"]
    return meminfo.get("MemFree", 0) + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)


def read_cpu_times(proc_root: Path) -> tuple[int, int]:
    """``(busy, total)`` jiffies from the first ``cpu`` line of ``stat``."""
    for line in read_small(proc_root / "stat").splitlines():
        if line.startswith("cpu "):
            numbers = [int(x) for x in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
            # is already counted in user/nice, so only the first eight add up to the total.
            total = sum(numbers[:8])
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            return total - idle, total
    raise ValueError("no 'cpu ' line in stat")


def read_loadavg(proc_root: Path) -> list[float]:
    return [float(x) for x in read_small(proc_root / "loadavg").split()[:3]]


def read_uptime(proc_root: Path) -> float:
    return float(read_small(proc_root / "uptime").split()[0])


class Disk(NamedTuple):
    path: str
    free_bytes: int
    total_bytes: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 100.0


def read_disk(path: str) -> Disk:
    st = os.statvfs(path)
    # f_bavail: what an unprivileged writer (the database) can still use.
    return Disk(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def running_names(proc_root: Path, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` (already cut to the kernel's 15-character comm) are running.

    Reads ``<proc>/<pid>/comm`` one at a time and stops early once all are found, so a
    box with thousands of processes costs a directory walk, not a list of them all.
    """
    found: set[str] = set()
    try:
        entries = os.scandir(proc_root)
    except OSError:
        return found
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "comm"), "rb") as fh:
                    name = fh.read(64).decode("utf-8", "replace").strip()
            except OSError:
                continue  # the process ended while we looked
            if name in wanted:
                found.add(name)
                if found == wanted:
                    break
    return found


def comm_name(service: str) -> str:
    """The kernel keeps only 15 characters of a process name in ``comm``."""
    return service[:15]
