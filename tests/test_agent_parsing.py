"""The agent's parts that need no process: kernel lines in the formats real kernels write,
hysteresis, the spool's order and bound, the signature, the systemd unit and the CLI."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.signers import AgentSigner

from bot.agent.kernel_log import FileSource, OomParser
from bot.agent.options import AgentConfigError, build_config
from bot.agent.rules import Condition, Finding
from bot.agent.sender import sign
from bot.agent.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "tests" / "payloads" / "agent" / "kernel"


def kills_in(name: str) -> list:
    parser = OomParser()
    kills = []
    for line in (KERNEL / name).read_text().splitlines():
        kills += parser.feed(line, 0.0)
    return kills + parser.flush(10.0)


def test_a_5_15_oom_report_is_one_kill_with_victim_rss_and_cgroup():
    [kill] = kills_in("oom-5.15.log")
    assert (kill.pid, kill.name, kill.rss_kb) == (1234, "mysqld", 1603456)
    assert kill.details["cgroup"] == "/system.slice/mysql.service"
    assert kill.details["invoked_by"] == "mysqld"
    assert kill.kernel_time == pytest.approx(1234567.123699)


def test_a_4_15_oom_report_counts_file_rss_too():
    [kill] = kills_in("oom-4.15.log")
    assert (kill.pid, kill.name, kill.rss_kb) == (2345, "java", 3145728 + 1024)
    assert kill.details["invoked_by"] == "java"


def test_a_cgroup_oom_in_syslog_format():
    [kill] = kills_in("oom-memcg-syslog.log")
    assert (kill.pid, kill.name) == (3456, "node")
    assert kill.details["constraint"] == "CONSTRAINT_MEMCG"
    assert kill.details["uid"] == 1000


def test_dev_kmsg_records_parse_the_same_way():
    [kill] = kills_in("kmsg-records.txt")
    assert (kill.pid, kill.name, kill.rss_kb) == (1234, "mysqld", 1603456)
    assert kill.kernel_time == pytest.approx(1234567.123699)


def test_an_oom_kill_line_without_its_killed_line_is_still_reported_after_a_moment():
    parser = OomParser(grace=1.0)
    line = "[1.0] oom-kill:constraint=CONSTRAINT_NONE,task=redis-server,pid=77,uid=999"
    assert parser.feed(line, 100.0) == []
    assert parser.flush(100.5) == []
    [kill] = parser.flush(101.0)
    assert (kill.name, kill.pid, kill.rss_kb) == ("redis-server", 77, None)
    assert "redis-server (pid 77)" in kill.summary("prod-web-01")


def test_a_storm_of_kills_keeps_the_parser_small():
    parser = OomParser()
    reported = []
    for pid in range(1, 1001):
        reported += parser.feed(f"oom-kill:constraint=CONSTRAINT_NONE,task=w{pid},pid={pid}", 0)
    reported += parser.flush(5.0)
    assert len(reported) == 1000
    assert len(parser._pending) == 0 and len(parser._recent) <= 64


def test_a_followed_file_survives_rotation_and_truncation(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text("old line\n")
    source = FileSource(str(log))
    assert source.poll() == []
    with open(log, "a") as fh:
        fh.write("one\ntw")
    assert source.poll() == ["one"]
    with open(log, "a") as fh:
        fh.write("o\n")
    assert source.poll() == ["two"]
    os.rename(log, tmp_path / "kern.log.1")
    log.write_text("three\n")
    assert source.poll() == ["three"]
    log.write_text("")  # copytruncate
    assert source.poll() == []
    log.write_text("four\n")
    assert source.poll() == ["four"]
    source.close()


def test_hysteresis_needs_the_hold_and_the_clear():
    bad = Finding(True, "warning", "bad", "ok again", {})
    good = Finding(False, "warning", "bad", "ok again", {})
    cond = Condition("memory_pressure", hold=10, clear=20)
    assert cond.update(bad, 0, 0) is None
    assert cond.update(good, 5, 5) is None  # a blip shorter than the hold
    assert cond.update(bad, 6, 6) is None
    fired = cond.update(bad, 16, 16)
    assert fired is not None and not fired.resolved
    assert cond.update(bad, 17, 17) is None  # never twice open
    assert cond.update(good, 18, 18) is None
    assert cond.update(bad, 19, 19) is None  # flapping back resets the clear timer
    assert cond.update(good, 20, 20) is None
    resolved = cond.update(good, 40, 40)
    assert resolved is not None and resolved.resolved and resolved.summary == "ok again"


def test_the_spool_keeps_order_across_restarts_and_drops_the_oldest(tmp_path):
    spool = Spool(tmp_path, max_items=3)
    for n in range(2):
        spool.append({"details": {"n": n}})
    spool = Spool(tmp_path, max_items=3)  # restarted
    for n in range(2, 5):
        spool.append({"details": {"n": n}})
    seen = []
    while (item := spool.oldest()) is not None:
        seen.append(item[1])
        spool.remove(item[0])
    assert [b'"n":2' in seen[0], b'"n":3' in seen[1], b'"n":4' in seen[2]] == [True] * 3
    assert b'"spool_dropped":1' in seen[1] and b'"spool_dropped":1' in seen[2]


def test_the_signature_is_the_contracts():
    body = b'{"host":"prod-web-01","kind":"oom_kill"}'
    assert sign("k3y", body, "1733340000") == AgentSigner("k3y").signature(body, "1733340000")


def test_the_key_and_url_are_checked_before_anything_runs():
    with pytest.raises(AgentConfigError, match="STABILIZE_WEBHOOK_TOKEN"):
        build_config({"url": "http://127.0.0.1:3000", "host": "a"}, env={})
    for url in ("ftp://x", "http://bot:port/", "https://"):
        with pytest.raises(AgentConfigError, match="not an http"):
            build_config({"url": url, "host": "a"}, env={"STABILIZE_WEBHOOK_TOKEN": "k"})
    with pytest.raises(AgentConfigError, match="malformed duration"):
        build_config({"url": "http://x", "interval": "soon"}, env={"STABILIZE_WEBHOOK_TOKEN": "k"})
    config = build_config(
        {"url": "http://127.0.0.1:3000/", "host": "a"}, env={"STABILIZE_WEBHOOK_TOKEN": "k"}
    )
    assert config.url == "http://127.0.0.1:3000/alerts/agent"


def test_the_agent_imports_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"bot"}
    for path in (ROOT / "bot" / "agent").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed, f"{path.name} imports {name}"
                if top == "bot":
                    assert name in ("bot", "bot.agent") or name.startswith("bot.agent."), name
    assert (ROOT / "bot" / "__init__.py").read_text().count("import") == 0


def stabilize(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("stabilize")), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_the_cli_prints_a_hardened_systemd_unit():
    result = stabilize(
        "agent", "--url", "https://bot.example.com", "--host", "prod-web-01",
        "--services", "nginx,mysqld", "--print-systemd-unit",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    for line in (
        "Restart=always",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "OOMScoreAdjust=-500",
        "MemoryMax=64M",
        "ReadWritePaths=/var/lib/stabilize-agent",
        "EnvironmentFile=/etc/stabilize/agent.env",
    ):
        assert f"\n{line}\n" in unit
    exec_start = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    assert (
        "-m bot.agent --url https://bot.example.com/alerts/agent --host prod-web-01" in exec_start
    )
    assert "--services nginx,mysqld" in exec_start
    assert "STABILIZE_WEBHOOK_TOKEN=" not in exec_start


def test_the_cli_says_what_is_missing_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_WEBHOOK_TOKEN"}
    result = stabilize("agent", "--host", "prod-web-01", env=env)
    assert result.returncode == 2
    assert "--url is required" in result.stderr
    result = stabilize("agent", "--url", "http://127.0.0.1:9", "--host", "h", env=env)
    assert result.returncode == 2
    assert "STABILIZE_WEBHOOK_TOKEN is not set" in result.stderr


def test_stabilize_agent_logs_what_it_does(tmp_path):
    """Under `stabilize agent` as under `python3 -m bot.agent`: the CLI's own logging set-up
    must not swallow the agent's INFO lines."""
    import signal

    from helpers import free_port

    env = {**os.environ, "STABILIZE_WEBHOOK_TOKEN": "agent-log-test"}
    command = [
        str(Path(sys.executable).with_name("stabilize")), "agent",
        "--url", f"http://127.0.0.1:{free_port()}", "--host", "prod-web-01",
        "--spool", str(tmp_path / "spool"), "--interval", "200ms", "--retry-max", "500ms",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert "stabilize-agent INFO: watching " in stderr, stderr
    assert "on prod-web-01 every 0.2s" in stderr


def test_systemd_accepts_the_unit_as_written(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "stabilize-agent.service"
    result = stabilize("agent", "--url", "https://bot.example.com", "--print-systemd-unit")
    unit.write_text(result.stdout)
    check = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in check.stderr.splitlines() if str(unit) in line]
    assert complaints == []


def test_dev_kmsg_is_read_one_record_at_a_time_without_blocking():
    import socket

    from bot.agent.kernel_log import KmsgSource

    # /dev/kmsg hands out one record per read(); a SEQPACKET socket keeps boundaries alike.
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setblocking(False)
    source = KmsgSource("kmsg-test", from_start=True, fd=reader.detach())
    assert source.poll() == []
    for record in (KERNEL / "kmsg-records.txt").read_text().splitlines():
        writer.send(record.encode() + b"\n SUBSYSTEM=memory\n DEVICE=+memory:0\n")
    lines = source.poll()
    assert len(lines) == 4 and all("SUBSYSTEM" not in line for line in lines)
    parser = OomParser()
    [kill] = [k for line in lines for k in parser.feed(line, 0.0)]
    assert kill.name == "mysqld"
    source.close()
    writer.close()


def test_journalctl_short_monotonic_lines_keep_the_kernel_time():
    parser = OomParser()
    line = (
        "[1234567.123699] prod-web-01 kernel: Out of memory: Killed process 1234 (mysqld) "
        "total-vm:2520212kB, anon-rss:1603456kB, file-rss:0kB, shmem-rss:0kB, UID:27 "
        "pgtables:3668kB oom_score_adj:0"
    )
    [kill] = parser.feed(line, 0.0)
    assert (kill.name, kill.kernel_time) == ("mysqld", pytest.approx(1234567.123699))
