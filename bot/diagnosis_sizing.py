"""How big: the swap file for a box, and the instance type its measured memory need fits.

Pure functions over ``Facts`` used by the rules in ``bot.diagnosis_rules``; the formulas are
documented in docs/diagnosis.md (Sizing).
"""

from __future__ import annotations

import math

from bot.facts import KIB_PER_GIB, Facts, InstanceType

HEADROOM = 0.75  # the measured need should fill at most 75 % of the new type's memory
SWAP_MIN_G, SWAP_MAX_G = 1, 64
DISK_MARGIN_PCT = 10.0  # keep this much of / free after creating the swap file


def gib(kib: float) -> str:
    return f"{kib / KIB_PER_GIB:.1f} GiB"


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def measured_need_mib(f: Facts) -> float | None:
    """Memory the workload wants: used RAM + used swap + the largest OOM-killed process
    (its memory was wanted too), divided by HEADROOM."""
    if f.memory:
        used = f.memory.used_kib + (f.swap.used_kib if f.swap else 0)
        killed = max((k.anon_rss_kib or 0 for k in f.oom_kills or []), default=0)
        return (used + killed) / 1024 / HEADROOM
    mem = (f.cwagent or {}).get("mem_used_percent")
    if mem and f.instance and f.instance.memory_mib:
        return mem.maximum / 100 * f.instance.memory_mib / HEADROOM
    return None


def resize_target(f: Facts) -> tuple[InstanceType | None, str]:
    """The smallest larger type of the same family and architecture with enough memory for
    the measured need, and a line saying why (or why none)."""
    inst = f.instance
    if inst is None or inst.memory_mib is None or not f.family_types:
        return None, "no resize target: the instance type is unknown (AWS facts missing)"
    bigger = [
        t
        for t in f.family_types
        if t.memory_mib > inst.memory_mib
        and (not inst.architecture or not t.architectures or inst.architecture in t.architectures)
    ]
    if not bigger:
        return None, f"no resize target: {inst.type} is already the largest {inst.family} size"
    need = measured_need_mib(f)
    if need is None:
        return bigger[0], f"{bigger[0].name} is the next {inst.family} size (no memory measured)"
    fits = [t for t in bigger if t.memory_mib >= need]
    if not fits:
        top = bigger[-1]
        return top, f"measured need {need / 1024:.1f} GiB exceeds every {inst.family} size"
    t = fits[0]
    return t, (
        f"measured need {need / 1024:.1f} GiB (used + swap + OOM-killed, at"
        f" {HEADROOM:.0%} fill) → {t.name} has {t.memory_mib / 1024:g} GiB"
    )


def swap_size_g(f: Facts) -> tuple[int | None, str]:
    """Swap equal to RAM up to 4G, half of RAM above (at least 4G), 1G–64G, capped so that
    DISK_MARGIN_PCT of / stays free."""
    if not f.memory:
        return None, "no swap size: memory size unknown"
    ram_g = max(1, math.ceil(f.memory.total_kib / KIB_PER_GIB - 0.05))
    size = ram_g if ram_g <= 4 else max(4, math.ceil(ram_g / 2))
    size = max(SWAP_MIN_G, min(SWAP_MAX_G, size))
    why = f"{size}G for {ram_g} GiB of RAM"
    if f.disk_root is None:
        return None, "no swap size: free disk on / unknown (the runbook checks it again)"
    d = f.disk_root
    room = math.floor((d.free_kib - d.size_kib * DISK_MARGIN_PCT / 100) / KIB_PER_GIB)
    if room < SWAP_MIN_G:
        return None, (
            f"no swap: / has {gib(d.free_kib)} free of {gib(d.size_kib)};"
            f" a swap file must leave {DISK_MARGIN_PCT:.0f} % free"
        )
    if room < size:
        return room, f"{room}G (wanted {why}, capped by {gib(d.free_kib)} free on /)"
    return size, why


def next_size(f: Facts) -> InstanceType | None:
    """The next larger size of the same family and architecture, or None."""
    inst = f.instance
    if inst is None or inst.memory_mib is None or not f.family_types:
        return None
    if inst.state not in ("running", "stopped"):
        return None
    for t in f.family_types:
        same_arch = not inst.architecture or not t.architectures
        if t.memory_mib > inst.memory_mib and (same_arch or inst.architecture in t.architectures):
            return t
    return None
