"""Does diagnosing a fleet cost about as much as diagnosing one host?

Starts one real OpenSSH server on 127.0.0.1 (the tests' helper), writes an inventory of N
hosts (default 20) that all point at it, then, in the same run so the machine's noise hits
both: diagnoses one host (the baseline, median of --repeat runs) and all N concurrently
(median of --repeat runs). Each host is one SSH connection running the one fact command.

All N "hosts" are one sshd on this box, so every host's server side (sshd's key exchange,
the login shell, the fact command) competes for the same two cores; on a real fleet that
work happens on N machines. Two things keep that visible:

- the floor: N bare SSH sessions running ``true`` at once, and the bot's own CPU per host;
- the login shell. A server's stock ``~/.bashrc`` returns at once for a non-interactive
  shell; this machine's root one runs ``pyenv init`` on every SSH command. The goal is
  measured with the stand-in hosts skipping it (``lean_login``, as the tests' sshd does);
  the same run is repeated with this machine's rc files and printed beside it.

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


def measure(hosts: int, repeat: int, tmp: Path, lean_login: bool) -> dict[str, float]:
    server = ssh.SshServer(tmp / f"sshd-{lean_login}", lean_login=lean_login).start()
    try:
        return asyncio.run(run(hosts, repeat, tmp, server))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = ssh.missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory(prefix="stabilize-bench-") as tmp:
        lean = measure(args.hosts, args.repeat, Path(tmp), lean_login=True)
        rc = measure(args.hosts, args.repeat, Path(tmp), lean_login=False)
    n = args.hosts
    print(f"{'':34} {'lean login':>11} {'with rc files':>14}")
    rows = [
        ("one host diagnosed (median)", "one"),
        (f"{n} hosts diagnosed at once", "fleet"),
        (f"{n} bare SSH sessions (floor)", "floor"),
        ("bot CPU per host", "cpu_per_host"),
    ]
    for label, key in rows:
        print(f"{label:34} {lean[key] * 1000:8.1f} ms {rc[key] * 1000:11.1f} ms")
    ratio = lean["fleet"] / lean["one"]
    verdict = "OK" if ratio <= GOAL_RATIO else "SLOWER THAN GOAL"
    print(
        f"{'ratio fleet/one':34} {ratio:9.2f}x {rc['fleet'] / rc['one']:12.2f}x"
        f"   goal <= {GOAL_RATIO:.1f}x (lean login): {verdict}"
    )
    print(
        f"{'ratio fleet/floor':34} {lean['fleet'] / lean['floor']:9.2f}x"
        f" {rc['fleet'] / rc['floor']:12.2f}x   (our cost above bare SSH)"
    )


if __name__ == "__main__":
    main()
