"""Diagnosis rules: pure functions from ``Facts`` to findings and recommended runbooks.

Every rule reads only the facts it needs and does nothing when they are unknown. Thresholds
are the constants below; docs/diagnosis.md explains each rule and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.diagnosis_sizing import gib, mib, next_size, resize_target, swap_size_g
from bot.facts import APP_TIER, DATABASES, Facts, MetricStats, service_of

MEM_AVAILABLE_MIN_PCT = 10.0  # below: memory pressure
MEM_AVAILABLE_CRITICAL_PCT = 5.0
SWAP_USED_MAX_PCT = 50.0  # above: memory pressure (and thrashing with high load)
CWAGENT_MEM_MAX_PCT = 90.0  # mem_used_percent, when SSH facts are missing
CPU_SUSTAINED_PCT = 70.0
CPU_MIN_DATAPOINTS = 3  # 15 minutes of 5-minute periods
SMALL_TYPE_MAX_MIB = 8192  # "a small type": resizing is the fix, not a leak hunt
DISK_LOW_PCT = 10.0
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    severity: str  # critical / warning / info
    title: str
    evidence: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # The contract has three keys; advice travels as evidence lines marked "Advice:".
        return {
            "severity": self.severity,
            "title": self.title,
            "evidence": self.evidence + [f"Advice: {a}" for a in self.advice],
        }


@dataclass(frozen=True)
class Recommended:
    runbook: str
    params: dict[str, str]
    reason: str
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runbook": self.runbook, "params": dict(self.params), "reason": self.reason}

    def label(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.runbook} {args}".strip()


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommended] = field(default_factory=list)


Rule = Callable[[Facts], Result]


# -- formatting ---------------------------------------------------------------------------


def _memory_line(f: Facts) -> str | None:
    if not f.memory:
        return None
    m = f.memory
    est = " (estimated)" if m.available_estimated else ""
    pct = f"{m.available_pct:.0f} %"
    return f"memory: {gib(m.available_kib)} of {gib(m.total_kib)} available ({pct}){est}"


def _swap_line(f: Facts) -> str | None:
    if not f.swap:
        return None
    if f.swap.total_kib == 0:
        return "swap: none (/proc/swaps lists no device)"
    s = f.swap
    return f"swap: {gib(s.used_kib)} of {gib(s.total_kib)} used ({s.used_pct:.0f} %)"


def _load_line(f: Facts) -> str | None:
    if not f.load:
        return None
    cpus = f" on {f.cpus} CPUs" if f.cpus else ""
    return f"load average: {f.load.one:.2f} {f.load.five:.2f} {f.load.fifteen:.2f}{cpus}"


def _top_lines(f: Facts, n: int = 3) -> list[str]:
    return [f"top RSS: {p.name} (pid {p.pid}) {mib(p.rss_kib)}" for p in f.top_processes(n)]


def _cpu_line(f: Facts) -> str | None:
    if not f.cpu:
        return None
    c = f.cpu
    return (
        f"CPUUtilization last hour: average {c.average:.0f} %, max {c.maximum:.0f} %"
        f" ({len(c.datapoints)} × 5 min)"
    )


def _instance_line(f: Facts) -> str | None:
    i = f.instance
    if not i:
        return None
    size = ""
    if i.memory_mib is not None:
        size = f", {i.vcpus} vCPU, {i.memory_mib / 1024:g} GiB"
    return f"instance: {i.id} {i.type} ({i.state}{size})"


def _lines(*items: str | None) -> list[str]:
    return [i for i in items if i]


def _resize(f: Facts, why: str, evidence: list[str]) -> tuple[Recommended | None, str]:
    target, note = resize_target(f)
    if target is None or f.instance is None:
        return None, note
    if f.instance.state not in ("running", "stopped"):
        return None, f"no resize: the instance is {f.instance.state}"
    reason = f"{why}: {f.instance.type} → {target.name} ({note}){_asg_note(f, target.name)}"
    return Recommended("resize-instance", _resize_params(f, target.name), reason, evidence), note


def _resize_params(f: Facts, new_type: str) -> dict[str, str]:
    """An Auto Scaling Group member is resized with force=true: the runbook then suspends the
    group's HealthCheck/ReplaceUnhealthy while the instance is stopped (see resize-instance)."""
    params = {"type": new_type}
    if f.asg is not None:
        params["force"] = "true"
    return params


def _asg_note(f: Facts, new_type: str) -> str:
    if f.asg is None:
        return ""
    return (
        f"; member of {f.asg.name}: the group's health-check replacement is suspended during"
        f" the resize; update its launch template to {new_type} so new instances match"
    )


# -- rules ----------------------------------------------------------------------------------


def ssh_unreachable(f: Facts) -> Result:
    r = Result()
    if f.ssh_status in ("ok", "skipped"):
        return r
    ssm = bool(f.source and f.source.startswith("ssm "))
    ssh_error = next((e for e in f.errors if e.startswith(("ssh:", "ssm:"))), "ssh: failed")
    evidence = _lines(ssh_error, _instance_line(f), _cpu_line(f))
    mem = (f.cwagent or {}).get("mem_used_percent")
    if mem:
        evidence.append(f"mem_used_percent (CloudWatch agent): average {mem.average:.0f} %")
    if ssm and f.ssh_status == "timeout":
        title = "SSM Run Command timed out: the host may be too busy to run it"
    elif ssm:
        title = "SSM Run Command failed: the host's own facts are missing"
        r.findings.append(Finding("warning", title, evidence))
        return r
    elif f.ssh_status == "timeout":
        title = "SSH timed out: the host may be too busy to accept a handshake"
    elif f.ssh_status == "refused":
        title = "SSH refused: sshd is not answering (it may have been OOM-killed)"
    else:
        r.findings.append(
            Finding("warning", "SSH failed: facts from the host are missing", evidence)
        )
        return r
    way = "SSM" if ssm else "SSH"
    rec, note = _resize(f, f"{way} is unreachable and a stop/start resize needs no SSH", evidence)
    if rec:
        r.recommendations.append(rec)
    else:
        evidence.append(note)
    r.findings.append(Finding("critical", title, evidence))
    return r


def oom_kills(f: Facts) -> Result:
    r = Result()
    kills = f.oom_kills or []
    if not kills:
        return r
    lines = []
    for k in kills[-5:]:
        size = f", {mib(k.anon_rss_kib)} anon RSS" if k.anon_rss_kib else ""
        lines.append(f"{k.when or 'time unknown'}: killed {k.process} (pid {k.pid}{size})")
    if len(kills) > 5:
        lines.insert(0, f"{len(kills) - 5} earlier kills not shown")
    evidence = lines + _lines(_memory_line(f), _swap_line(f))
    n = len(kills)
    if f.swap is not None and f.swap.total_kib == 0:
        swap_g, note = swap_size_g(f)
        if swap_g is not None:
            reason = f"quick relief for {n} OOM kill(s) in 24 h with no swap: add {note}"
            r.recommendations.append(
                Recommended("add-swap", {"size": f"{swap_g}G"}, reason, evidence)
            )
        else:
            evidence.append(note)
        r.findings.append(
            Finding(
                "critical",
                f"OOM killer ran {n}× in the last 24 h and there is no swap",
                evidence,
                ["swap is quick relief; if kills continue, the box needs more memory"],
            )
        )
    else:
        swap = f" despite {gib(f.swap.total_kib)} of swap" if f.swap else ""
        rec, note = _resize(f, f"{n} OOM kill(s) in 24 h{swap}", evidence)
        if rec:
            r.recommendations.append(rec)
        else:
            evidence.append(note)
        r.findings.append(
            Finding("critical", f"OOM killer ran {n}× in the last 24 h{swap}", evidence)
        )
    return r


def memory_pressure(f: Facts) -> Result:
    r = Result()
    evidence: list[str]
    if f.memory:
        low = f.memory.available_pct < MEM_AVAILABLE_MIN_PCT
        swapping = bool(f.swap and f.swap.total_kib and f.swap.used_pct > SWAP_USED_MAX_PCT)
        if not (low or swapping):
            return r
        critical = f.memory.available_pct < MEM_AVAILABLE_CRITICAL_PCT
        if low:
            title = (
                f"Memory pressure: {f.memory.available_pct:.0f} % of"
                f" {gib(f.memory.total_kib)} available"
            )
        else:
            assert f.swap
            title = f"Memory pressure: {f.swap.used_pct:.0f} % of swap in use"
        evidence = _lines(_memory_line(f), _swap_line(f)) + _top_lines(f)
    else:
        mem = (f.cwagent or {}).get("mem_used_percent")
        swap = (f.cwagent or {}).get("swap_used_percent")
        mem_high = bool(mem and mem.average > CWAGENT_MEM_MAX_PCT)
        swap_high = bool(swap and swap.average > SWAP_USED_MAX_PCT)
        if not (mem_high or swap_high):
            return r
        critical = bool(mem and mem.average > 100 - MEM_AVAILABLE_CRITICAL_PCT)
        if mem_high and mem:
            title = f"Memory pressure: {mem.average:.0f} % used (CloudWatch agent)"
        else:
            assert swap
            title = f"Memory pressure: {swap.average:.0f} % of swap used (CloudWatch agent)"
        evidence = [
            f"{name} last hour: average {m.average:.0f} %, max {m.maximum:.0f} %"
            for name, m in (("mem_used_percent", mem), ("swap_used_percent", swap))
            if m
        ]
    inst = f.instance
    advice: list[str] = []
    if inst and inst.memory_mib and inst.memory_mib > SMALL_TYPE_MAX_MIB:
        advice.append(
            f"{inst.type} has {inst.memory_mib / 1024:g} GiB: on a box this size, look for a leak"
            " or an oversized cache in the top processes before buying more memory"
        )
    else:
        rec, note = _resize(f, "memory pressure on a small type", evidence)
        if rec:
            r.recommendations.append(rec)
        else:
            evidence.append(note)
    r.findings.append(Finding("critical" if critical else "warning", title, evidence, advice))
    return r


def swap_thrashing(f: Facts) -> Result:
    r = Result()
    if not (f.swap and f.swap.total_kib and f.load and f.cpus):
        return r
    if f.swap.used_pct <= SWAP_USED_MAX_PCT or f.load.one <= f.cpus:
        return r
    evidence = _lines(_swap_line(f), _load_line(f), _memory_line(f))
    rec, note = _resize(f, "swap thrashing: the working set does not fit in RAM", evidence)
    if rec:
        r.recommendations.append(rec)
    else:
        evidence.append(note)
    r.findings.append(
        Finding(
            "warning",
            f"Swap thrashing: {f.swap.used_pct:.0f} % of swap in use and load"
            f" {f.load.one:.1f} on {f.cpus} CPUs",
            evidence,
            ["swap is a band-aid: the box keeps paging; give it enough RAM (resize)"],
        )
    )
    return r


def cpu_level(stats: MetricStats) -> float | None:
    """The CPU to absorb when it is sustained: the higher of the hour's average and the last
    CPU_MIN_DATAPOINTS periods' average when each of those is above the threshold."""
    points = stats.datapoints
    if len(points) < CPU_MIN_DATAPOINTS:
        return None
    recent = points[-CPU_MIN_DATAPOINTS:]
    recent_avg = sum(recent) / len(recent)
    if min(recent) > CPU_SUSTAINED_PCT:
        return max(recent_avg, stats.average)
    if stats.average > CPU_SUSTAINED_PCT:
        return stats.average
    return None


def cpu_sustained(f: Facts) -> Result:
    r = Result()
    c = f.cpu
    level = cpu_level(c) if c else None
    if c is None or level is None:
        return r
    minutes = CPU_MIN_DATAPOINTS * 5
    evidence = _lines(_cpu_line(f), _instance_line(f), _load_line(f))
    evidence.insert(1, f"last {minutes} min: {', '.join(f'{p:.0f} %' for p in c.datapoints[-3:])}")
    advice: list[str] = []
    inst = f.instance
    burstable = bool(inst and inst.family.startswith("t"))
    if inst and inst.credit_mode == "standard":
        evidence.append(
            f"{inst.family} in standard credit mode: above-baseline CPU spends credits and"
            " is throttled when they run out"
        )
    title = f"CPU sustained at {level:.0f} % (above {CPU_SUSTAINED_PCT:.0f} % for {minutes}+ min)"
    if f.asg is None:
        advice.append("not in an Auto Scaling Group: more vCPUs (a larger size) is the fix")
    else:
        g = f.asg
        group = cpu_level(f.asg_cpu) if f.asg_cpu else level
        group = group if group is not None else (f.asg_cpu.average if f.asg_cpu else level)
        serving = g.in_service or g.desired or 1
        evidence.append(
            f"Auto Scaling Group {g.name}: {g.in_service} InService, desired {g.desired},"
            f" min {g.min_size}, max {g.max_size}; group CPU {group:.0f} %"
        )
        wanted = math.floor(serving * group / CPU_SUSTAINED_PCT) + 1 - serving
        room = g.max_size - g.desired
        title += f" on a member of {g.name}"
        if group <= CPU_SUSTAINED_PCT:
            advice.append("the group as a whole is below the threshold: this one member is hot")
        elif room <= 0:
            advice.append(
                f"{g.name} is at MaxSize {g.max_size}: raise MaxSize or use a larger instance type"
            )
        else:
            by = max(1, min(wanted, room))
            after = serving * group / (serving + by)
            capped = f" (capped by MaxSize {g.max_size}; wanted +{wanted})" if by < wanted else ""
            reason = (
                f"group CPU {group:.0f} % on {serving} instance(s): +{by} brings the average"
                f" to about {after:.0f} %{capped}"
            )
            r.recommendations.append(Recommended("scale-asg", {"by": str(by)}, reason, evidence))
    if burstable and inst is not None:
        bigger = next_size(f)
        if bigger is not None:
            reason = (
                f"burstable {inst.type} pinned at {level:.0f} %: {bigger.name} has a higher CPU"
                " baseline and earns credits faster (stop/start, no SSH needed)"
                + _asg_note(f, bigger.name)
            )
            r.recommendations.append(
                Recommended("resize-instance", _resize_params(f, bigger.name), reason, evidence)
            )
    r.findings.append(Finding("warning", title, evidence, advice))
    return r


_DUMP = {
    "mysqld": "mysqldump --single-transaction --routines | mysql -h <new-endpoint>",
    "mariadbd": "mariadb-dump --single-transaction --routines | mariadb -h <new-endpoint>",
    "postgres": "pg_dump -Fc | pg_restore -h <new-endpoint>",
    "mongod": "mongodump --archive | mongorestore --archive --uri <new-endpoint>",
    "redis-server": "redis-cli --rdb dump.rdb, then import it into ElastiCache",
}


def colocated_database(f: Facts) -> Result:
    r = Result()
    procs = f.processes or []
    dbs = [p for p in procs if service_of(p.name, DATABASES)]
    apps = [p for p in procs if service_of(p.name, APP_TIER)]
    if not dbs or not apps:
        return r
    db_names = sorted({service_of(p.name, DATABASES) or p.name for p in dbs})
    app_names = sorted({service_of(p.name, APP_TIER) or p.name for p in apps})
    evidence = [
        f"{name}: {mib(sum(p.rss_kib for p in procs if service_of(p.name) == name))} RSS"
        for name in db_names + app_names
    ] + _lines(_memory_line(f))
    db = db_names[0]
    advice = [
        f"move {', '.join(db_names)} to a managed service (RDS / ElastiCache): the permanent fix,"
        " the database and the app stop fighting over the same memory",
        f"checklist: 1) create the managed instance; 2) dump and restore ({_DUMP[db]});"
        " 3) switch the app's env (DB host, port, credentials) and restart it;"
        f" 4) watch errors, then stop the local {db}",
    ]
    title = f"Database {', '.join(db_names)} runs next to the app tier ({', '.join(app_names)})"
    r.findings.append(Finding("warning", title, evidence, advice))
    return r


def load_high(f: Facts) -> Result:
    r = Result()
    if f.load and f.cpus and f.load.one > 2 * f.cpus:
        evidence = _lines(_load_line(f)) + _top_lines(f)
        title = f"Load {f.load.one:.1f} on {f.cpus} CPUs"
        r.findings.append(Finding("warning", title, evidence))
    return r


def disk_low(f: Facts) -> Result:
    r = Result()
    d = f.disk_root
    if d and d.free_pct < DISK_LOW_PCT:
        evidence = [f"/: {gib(d.free_kib)} free of {gib(d.size_kib)} ({d.free_pct:.0f} %)"]
        r.findings.append(
            Finding("warning", f"Root filesystem {100 - d.free_pct:.0f} % full", evidence)
        )
    return r


RULES: tuple[Rule, ...] = (
    ssh_unreachable,
    oom_kills,
    memory_pressure,
    swap_thrashing,
    cpu_sustained,
    colocated_database,
    load_high,
    disk_low,
)


def healthy(f: Facts) -> Finding:
    """What to say when no rule found a problem."""
    oom = "no OOM kills in the last 24 h" if f.oom_kills == [] else None
    evidence = _lines(
        _memory_line(f), _swap_line(f), _load_line(f), oom, _cpu_line(f), _instance_line(f)
    )
    if f.has_ssh_facts and f.memory:
        return Finding("info", "Healthy: no memory pressure, no OOM kills, no overload", evidence)
    if f.instance:
        return Finding(
            "info",
            "No problem in the AWS facts; the host's own facts are missing (see errors)",
            evidence,
        )
    return Finding("info", "Not enough facts to judge this host (see errors)", evidence)


def evaluate(facts: Facts, rules: tuple[Rule, ...] = RULES) -> Result:
    """Run every rule; findings by severity, recommendations deduplicated (first wins)."""
    out = Result()
    for rule in rules:
        part = rule(facts)
        out.findings.extend(part.findings)
        for rec in part.recommendations:
            same = next((x for x in out.recommendations if x.runbook == rec.runbook), None)
            if same is None:
                out.recommendations.append(rec)
            elif same.params == rec.params:
                merged = same.evidence + [e for e in rec.evidence if e not in same.evidence]
                out.recommendations[out.recommendations.index(same)] = Recommended(
                    same.runbook, same.params, same.reason, merged
                )
    if not any(x.severity in ("critical", "warning") for x in out.findings):
        out.findings.append(healthy(facts))
    out.findings.sort(key=lambda x: SEVERITY_ORDER.get(x.severity, 3))
    order = {"add-swap": 0, "scale-asg": 1, "resize-instance": 2}
    out.recommendations.sort(key=lambda x: order.get(x.runbook, 9))
    return out
