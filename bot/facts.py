"""Facts about one host: what diagnosis rules read. Gathered read-only, never guessed.

A fact that could not be gathered stays ``None`` and the reason goes to ``Facts.errors``
(one line that names the fact and, where it can, the fix). Gathering never raises for a
host that is down, busy, garbled or missing permissions: see ``gather_facts``.

SSH facts come from one compound command over one connection (``bot.facts_ssh``); AWS facts
from boto3 describe calls and CloudWatch (``bot.facts_aws``). Both run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bot.config import HostSettings, SshTarget

if TYPE_CHECKING:
    from bot.facts_ssh import Runner
    from bot.services import Services

KIB_PER_GIB = 1024 * 1024

# Well-known services by process name (``ps -o comm``, at most 15 characters).
DATABASES = ("mysqld", "mariadbd", "postgres", "mongod", "redis-server")
APP_TIER = ("nginx", "node", "gunicorn", "uwsgi", "php-fpm", "java", "httpd", "apache2", "puma")
_ALIASES = {"nodejs": "node", "mysqld_safe": "mysqld"}


@functools.lru_cache(maxsize=4096)
def service_of(name: str, among: tuple[str, ...] = DATABASES + APP_TIER) -> str | None:
    """The well-known service a process name belongs to: the name itself, or the name and a
    version or suffix (``php-fpm8.1``, ``postgres: writer``), never a longer word
    (``node_exporter`` is not node). Called for every process of every host: cached."""
    found = _service_pattern(among).match(_ALIASES.get(name, name))
    return found.group(1) if found else None


@functools.cache
def _service_pattern(among: tuple[str, ...]) -> re.Pattern[str]:
    # Alternatives are tried in order, as ``among`` lists them.
    names = "|".join(re.escape(known) for known in among)
    return re.compile(rf"({names})(?:[0-9.:\- ]|\Z)")


@dataclass(frozen=True)
class HostTarget:
    """A host we can diagnose: from the inventory, or found by its EC2 ``Name`` tag."""

    name: str
    ssh: SshTarget | None = None
    gateway: SshTarget | None = None
    instance_id: str | None = None
    asg: str | None = None
    executor: str = "ssh"
    source: str = "inventory"  # or "ec2"

    @classmethod
    def from_settings(
        cls, name: str, host: HostSettings, gateways: dict[str, SshTarget]
    ) -> HostTarget:
        gateway = gateways.get(host.ssh.gateway) if host.ssh and host.ssh.gateway else None
        return cls(
            name=name,
            ssh=host.ssh,
            gateway=gateway,
            instance_id=host.instance_id,
            asg=host.asg,
            executor=host.executor,
        )


@dataclass(frozen=True)
class Memory:
    total_kib: int
    available_kib: int
    available_estimated: bool = False  # kernels before 3.14 have no MemAvailable

    @property
    def available_pct(self) -> float:
        return 100.0 * self.available_kib / self.total_kib if self.total_kib else 0.0

    @property
    def used_kib(self) -> int:
        return max(0, self.total_kib - self.available_kib)


@dataclass(frozen=True)
class SwapDevice:
    path: str
    kind: str
    size_kib: int
    used_kib: int


@dataclass(frozen=True)
class Swap:
    total_kib: int
    free_kib: int
    devices: list[SwapDevice] = field(default_factory=list)

    @property
    def used_kib(self) -> int:
        return max(0, self.total_kib - self.free_kib)

    @property
    def used_pct(self) -> float:
        return 100.0 * self.used_kib / self.total_kib if self.total_kib else 0.0


@dataclass(frozen=True)
class Load:
    one: float
    five: float
    fifteen: float


@dataclass(frozen=True)
class Process:
    pid: int
    rss_kib: int
    name: str


@dataclass(frozen=True)
class OomKill:
    when: str | None  # UTC ISO 8601, None when the log line had no usable time
    pid: int
    process: str
    anon_rss_kib: int | None = None


@dataclass(frozen=True)
class Disk:
    mount: str
    size_kib: int
    free_kib: int

    @property
    def free_pct(self) -> float:
        return 100.0 * self.free_kib / self.size_kib if self.size_kib else 0.0


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    architectures: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Instance:
    id: str
    type: str
    state: str
    architecture: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    credit_mode: str | None = None  # t-family only: standard / unlimited

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]


@dataclass(frozen=True)
class MetricStats:
    """A CloudWatch metric over the last hour in 5-minute periods (oldest first)."""

    average: float
    maximum: float
    datapoints: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class AutoScalingGroup:
    name: str
    desired: int
    min_size: int
    max_size: int
    in_service: int


@dataclass
class Facts:
    """Everything gathered about one host; ``None`` means unknown (see ``errors``)."""

    host: str
    source: str | None = None  # how SSH facts were read, e.g. "ssh ubuntu@10.0.1.5:22"
    ssh_status: str = "skipped"  # ok / timeout / refused / auth / error / skipped
    aws_status: str = "skipped"  # ok / partial / error / skipped
    kernel: str | None = None
    memory: Memory | None = None
    swap: Swap | None = None
    load: Load | None = None
    cpus: int | None = None
    processes: list[Process] | None = None  # every process, largest RSS first
    oom_kills: list[OomKill] | None = None  # last 24 h
    kernel_log: str | None = None  # journalctl / dmesg
    disk_root: Disk | None = None
    uptime_s: float | None = None
    instance: Instance | None = None
    family_types: list[InstanceType] | None = None  # same family, for resize targets
    cpu: MetricStats | None = None  # CPUUtilization of this instance
    asg_cpu: MetricStats | None = None  # CPUUtilization of its Auto Scaling Group
    cwagent: dict[str, MetricStats] | None = None  # mem_used_percent, swap_used_percent
    asg: AutoScalingGroup | None = None
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def services(self) -> list[str]:
        """Well-known services running (database and app tier), by process name."""
        if self.processes is None:
            return []
        found: list[str] = []
        for proc in self.processes:
            known = service_of(proc.name)
            if known and known not in found:
                found.append(known)
        return found

    @property
    def has_ssh_facts(self) -> bool:
        return self.ssh_status == "ok"

    def top_processes(self, n: int = 10) -> list[Process]:
        return list(self.processes or [])[:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (the ``facts`` object of the diagnosis JSON)."""
        out: dict[str, Any] = {
            "source": self.source,
            "ssh": self.ssh_status,
            "aws": self.aws_status,
            "kernel": self.kernel,
            "memory": None,
            "swap": None,
            "load": asdict(self.load) if self.load else None,
            "cpus": self.cpus,
            "top_processes": [asdict(p) for p in self.top_processes()]
            if self.processes is not None
            else None,
            "services": self.services if self.processes is not None else None,
            "oom_kills_24h": [asdict(k) for k in self.oom_kills]
            if self.oom_kills is not None
            else None,
            "kernel_log": self.kernel_log,
            "disk_root": None,
            "uptime_s": self.uptime_s,
            "instance": asdict(self.instance) if self.instance else None,
            "cpu_1h": asdict(self.cpu) if self.cpu else None,
            "asg_cpu_1h": asdict(self.asg_cpu) if self.asg_cpu else None,
            "cwagent": {k: asdict(v) for k, v in self.cwagent.items()}
            if self.cwagent is not None
            else None,
            "asg": asdict(self.asg) if self.asg else None,
        }
        if self.memory:
            out["memory"] = {
                **asdict(self.memory),
                "available_pct": round(self.memory.available_pct, 1),
            }
        if self.swap:
            out["swap"] = {**asdict(self.swap), "used_pct": round(self.swap.used_pct, 1)}
        if self.disk_root:
            out["disk_root"] = {
                **asdict(self.disk_root),
                "free_pct": round(self.disk_root.free_pct, 1),
            }
        return out

    def summary(self) -> dict[str, Any]:
        """The few numbers worth keeping in the audit log."""
        return {
            "ssh": self.ssh_status,
            "aws": self.aws_status,
            "mem_available_pct": round(self.memory.available_pct, 1) if self.memory else None,
            "swap_used_pct": round(self.swap.used_pct, 1) if self.swap else None,
            "load1": self.load.one if self.load else None,
            "cpus": self.cpus,
            "oom_kills_24h": len(self.oom_kills) if self.oom_kills is not None else None,
            "instance_type": self.instance.type if self.instance else None,
            "cpu_avg_1h": round(self.cpu.average, 1) if self.cpu else None,
            "asg": self.asg.name if self.asg else None,
            "services": self.services,
            "errors": len(self.errors),
        }


async def gather_facts(
    services: Services, target: HostTarget, *, runner: Runner | None = None
) -> Facts:
    """SSH and AWS facts for ``target``, gathered concurrently. Never raises for the host's
    sake: whatever failed is named in ``Facts.errors``.

    ``runner`` overrides how the command runs (``LocalRunner`` for the demo); otherwise a
    ``services.fact_runner`` attribute if one was set, else SSH per the host's settings.
    """
    from bot.facts_aws import gather_aws
    from bot.facts_ssh import gather_ssh, runner_for

    started = time.monotonic()
    facts = Facts(host=target.name)
    chosen = runner or getattr(services, "fact_runner", None) or runner_for(services, target)
    jobs = []
    if chosen is not None:
        jobs.append(gather_ssh(facts, chosen))
    else:
        facts.errors.append(
            f"ssh: no SSH settings for host '{target.name}'"
            f" (add hosts.{target.name}.ssh to {services.settings.source})"
        )
    if target.instance_id:
        jobs.append(gather_aws(services, facts, target))
    await asyncio.gather(*jobs)
    facts.elapsed_s = round(time.monotonic() - started, 3)
    return facts
