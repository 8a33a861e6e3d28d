"""How heavy is ``stabilize agent`` on the box it watches? Runs ``python3 -m bot.agent`` for
60 s of watching (``--seconds`` to shorten) against prepared /proc files and a kernel log
that gets an OOM kill appended now and then, posting to a local receiver, and prints its
peak RSS (VmHWM from /proc/<pid>/status) and CPU time (utime+stime from /proc/<pid>/stat).

    .venv/bin/python bench/agent_footprint.py              # 60 s, default 5 s interval
    .venv/bin/python bench/agent_footprint.py --seconds 15 --interval 1s
    .venv/bin/python bench/agent_footprint.py --proc-root /proc   # watch this machine

Only loopback is used. The agent gets a throwaway key.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "tests" / "payloads" / "agent"
KEY = "bench-key-not-a-secret"


class Receiver(http.server.ThreadingHTTPServer):
    received = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')

    def log_message(self, *args: object) -> None:
        pass


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="watching time (60)")
    parser.add_argument("--interval", default="5s", help="the agent's --interval (5s)")
    parser.add_argument("--proc-root", default=None, help="default: prepared files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agent-footprint-"))
    receiver = Receiver(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    proc_root = Path(args.proc_root) if args.proc_root else tmp / "proc"
    if not args.proc_root:
        shutil.copytree(PAYLOADS / "proc", proc_root)
    kern_log = tmp / "kern.log"
    kern_log.write_text("")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(STABILIZE_WEBHOOK_TOKEN=KEY, PYTHONPATH=str(ROOT))
    command = [
        sys.executable, "-S", "-m", "bot.agent",  # -S: no site-packages, stdlib only
        "--url", f"http://127.0.0.1:{receiver.server_address[1]}",
        "--host", "bench-host", "--interval", args.interval,
        "--proc-root", str(proc_root), "--kernel-log", str(kern_log),
        "--spool", str(tmp / "spool"), "--services", "nginx,mysqld",
        "--hold", "5s", "--clear", "5s",
    ]  # fmt: skip
    log_path = tmp / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        time.sleep(1.0)  # start-up: imports and the hello
        start_cpu, started = cpu_seconds(agent.pid), time.monotonic()
        kills = 0
        busy, idle = 1203944, 48893215
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(1.0)
            if not args.proc_root:  # a box that is 50% busy, with an OOM kill every 10 s
                busy, idle = busy + 50, idle + 50
                (proc_root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")
            if int(elapsed) % 10 == 9:
                kills += 1
                pid = 30000 + kills
                with open(kern_log, "a") as fh:
                    fh.write(
                        f"[{1234600 + elapsed:.6f}] oom-kill:constraint=CONSTRAINT_NONE,"
                        f"nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
                        f"task_memcg=/system.slice/w.service,task=worker,pid={pid},uid=33\n"
                        f"[{1234600 + elapsed:.6f}] Out of memory: Killed process {pid} (worker) "
                        f"total-vm:1048576kB, anon-rss:524288kB, file-rss:0kB, shmem-rss:0kB, "
                        f"UID:33 pgtables:1024kB oom_score_adj:0\n"
                    )
        wall = time.monotonic() - started
        if agent.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            raise SystemExit(f"the agent exited early ({agent.returncode})")
        cpu = cpu_seconds(agent.pid) - start_cpu
        total_cpu = cpu_seconds(agent.pid)
        mem = proc_status(agent.pid)
    finally:
        agent.terminate()
        agent.wait(10)
        receiver.shutdown()
    result = {
        "watched_seconds": round(wall, 1),
        "interval": args.interval,
        "rss_max_mb": round(mem["VmHWM"] / 1024, 1),
        "rss_now_mb": round(mem["VmRSS"] / 1024, 1),
        "cpu_seconds_watching": round(cpu, 3),
        "cpu_seconds_total_with_startup": round(total_cpu, 3),
        "cpu_percent": round(100 * cpu / wall, 3),
        "oom_kills_appended": kills,
        "alerts_received": receiver.received,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:32} {value}")
        verdict = "OK" if result["rss_max_mb"] < 25 else "OVER the 25 MB budget"
        print(f"{'rss budget (25 MB)':32} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
