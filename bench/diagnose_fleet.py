"""Does diagnosing a fleet cost about as much as diagnosing one host?

Starts one real OpenSSH server on 127.0.0.1 (the tests' helper), writes an inventory of N
hosts (default 20) that all point at it, then, in the same run so the machine's noise hits
both: diagnoses one host (the baseline, median of --repeat runs) and all N concurrently
(median of --repeat runs). Each host is one SSH connection running the one fact command.

It also measures the floor this machine imposes: N bare SSH sessions running ``true`` at
once. All N "hosts" are one sshd on this box, so every host's server side (sshd, the login
shell and its rc files, the fact command) competes for the same cores; on a real fleet that
work happens on N machines. The bot's own CPU per host is printed too.

Goal: fleet / one <= 2.0. Run:

    .venv/bin/python bench/diagnose_fleet.py [--hosts 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import sshd as ssh  # noqa: E402

from bot.config import Secrets, parse_settings  # noqa: E402
from bot.diagnosis import diagnose_many  # noqa: E402
from bot.services import build_services  # noqa: E402

GOAL_RATIO = 2.0


async def bare_sessions(server: ssh.SshServer, n: int) -> float:
    """N concurrent SSH sessions that run ``true``: what the machine costs without us."""
    from bot.config import SshTarget
    from bot.facts_ssh import SshRunner

    target = SshTarget(
        host=server.host, port=server.port, user=server.user, key=str(server.key_path)
    )
    runner = SshRunner(target, connect_timeout=10)
    started = time.perf_counter()
    await asyncio.gather(*(runner.run("true") for _ in range(n)))
    return time.perf_counter() - started


async def timed(services, names: list[str]) -> float:
    started = time.perf_counter()
    found = await diagnose_many(services, names)
    took = time.perf_counter() - started
    bad = [d.host for d in found if d.facts.ssh_status != "ok"]
    if bad:
        raise SystemExit(f"SSH failed for {bad}: {found[0].errors}")
    return took


async def run(hosts: int, repeat: int, tmp: Path, server: ssh.SshServer) -> dict[str, float]:
    names = [f"fleet-{n:02d}" for n in range(hosts)]
    settings = parse_settings(
        {
            "slack": {"channel": "C0BENCH"},
            "hosts": {name: server.host_config() for name in names},
            "ssh": {"connect_timeout": "10s"},
        },
        source="<bench>",
    )
    services = build_services(settings, Secrets(), tmp / "bench.db", slack=False)
    try:
        await timed(services, names[:1])  # warm up: imports, key loading, sshd caches
        one = statistics.median([await timed(services, names[:1]) for _ in range(repeat)])
        cpu_before = time.process_time()
        fleet = statistics.median([await timed(services, names) for _ in range(repeat)])
        cpu = (time.process_time() - cpu_before) / (repeat * hosts)
        floor = statistics.median([await bare_sessions(server, hosts) for _ in range(repeat)])
    finally:
        services.close()
    return {"one": one, "fleet": fleet, "floor": floor, "cpu_per_host": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = ssh.missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory(prefix="stabilize-bench-") as tmp:
        server = ssh.SshServer(Path(tmp) / "sshd").start()
        try:
            r = asyncio.run(run(args.hosts, args.repeat, Path(tmp), server))
        finally:
            server.stop()
    n = args.hosts
    ratio = r["fleet"] / r["one"]
    verdict = "OK" if ratio <= GOAL_RATIO else "SLOWER THAN GOAL"
    print(f"one host diagnosed:          {r['one'] * 1000:8.0f} ms (median of {args.repeat})")
    print(f"{n} hosts diagnosed at once:  {r['fleet'] * 1000:8.0f} ms")
    print(f"{n} bare SSH sessions (true): {r['floor'] * 1000:8.0f} ms   (this machine's floor)")
    print(f"bot CPU per host:            {r['cpu_per_host'] * 1000:8.1f} ms")
    print(f"ratio fleet/one:             {ratio:8.2f}x   goal <= {GOAL_RATIO:.1f}x  {verdict}")
    print(
        f"ratio fleet/floor:           {r['fleet'] / r['floor']:8.2f}x   (our cost above bare SSH)"
    )


if __name__ == "__main__":
    main()
