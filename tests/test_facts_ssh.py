"""SSH facts against a real OpenSSH server on 127.0.0.1: this machine's /proc and kernel log
over one connection and one command, gateways, and the failures (refused, silent, auth) that
must still produce a diagnosis in time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from diagnosis_fixtures import make_services
from helpers import free_port

from bot.diagnosis import diagnose, diagnose_many

CONNECT_TIMEOUT = 2.0


@pytest.fixture
def services_for(settings_factory, tmp_path):
    made = []

    def build(hosts, **extra):
        services = make_services(
            settings_factory(hosts=hosts, ssh={"connect_timeout": "2s", **extra}), tmp_path
        )
        made.append(services)
        return services

    yield build
    for s in made:
        s.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (no SSH banner)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise AssertionError("no MemTotal")


async def test_facts_of_this_machine_over_one_connection_and_one_command(sshd, services_for):
    services = services_for({"web-01": sshd.host_config()})
    mark = sshd.mark()
    d = await diagnose(services, "web-01")
    f = d.facts
    assert f.ssh_status == "ok", d.errors
    assert f.source == f"ssh {sshd.user}@{sshd.host}:{sshd.port}"
    assert f.memory is not None and f.memory.total_kib == _meminfo_total()
    assert f.processes and any(p.name == "sshd" for p in f.processes)
    assert f.kernel_log in ("journalctl", "dmesg") and f.oom_kills is not None
    assert f.disk_root is not None and f.cpus
    assert [e for e in d.errors if e.startswith("ssh")] == []
    sshd.wait_for_log("Accepted publickey", since=mark)
    assert sshd.connections(mark) == 1
    assert sshd.commands(mark) == 1
    assert d.to_dict()["facts"]["memory"]["total_kib"] == _meminfo_total()


async def test_a_gateway_is_used_as_the_bastion(sshd, services_for):
    bastion = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key": str(sshd.key_path)}
    host = sshd.host_config()
    host["ssh"]["gateway"] = "bastion"
    services = services_for({"web-01": host}, gateways={"bastion": bastion})
    mark = sshd.mark()
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "ok", d.errors
    assert d.facts.source.endswith(f"via {sshd.user}@{sshd.host}:{sshd.port}")
    sshd.wait_for_log("Accepted publickey", count=2, since=mark)
    assert sshd.connections(mark) == 2  # the bastion, then the host through it


async def test_nothing_listening_gives_a_diagnosis_in_time(services_for):
    port = free_port()
    services = services_for({"web-01": {"ssh": {"host": "127.0.0.1", "port": port}}})
    started = time.monotonic()
    d = await diagnose(services, "web-01")
    assert time.monotonic() - started < CONNECT_TIMEOUT + 2
    assert d.facts.ssh_status == "refused"
    assert d.findings[0].title.startswith("SSH refused")
    assert any(f"connection refused by 127.0.0.1:{port}" in e for e in d.errors)


async def test_a_port_that_never_speaks_ssh_times_out_in_time(services_for, silent_port):
    services = services_for({"web-01": {"ssh": {"host": "127.0.0.1", "port": silent_port}}})
    started = time.monotonic()
    d = await diagnose(services, "web-01")
    took = time.monotonic() - started
    assert took < CONNECT_TIMEOUT + 2, took
    assert d.facts.ssh_status == "timeout", d.errors
    assert d.findings[0].title == "SSH timed out: the host may be too busy to accept a handshake"
    assert any("timed out after 2s" in e for e in d.errors), d.errors


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_says_a_silent_host_timed_out_in_one_line_not_a_traceback(
    silent_port, tmp_path, verbose
):
    import subprocess
    import sys

    from helpers import clean_environ, write_config

    hosts = {"web-01": {"ssh": {"host": "127.0.0.1", "port": silent_port}}}
    config = {"slack": {"channel": "C0ALERTS"}, "hosts": hosts, "ssh": {"connect_timeout": "1s"}}
    env = clean_environ()
    env.update(
        STABILIZE_CONFIG=str(write_config(tmp_path, config)),
        STABILIZE_DB=str(tmp_path / "s.db"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    flags = ["-v"] if verbose else []
    result = subprocess.run(
        [sys.executable, "-m", "commands.cli", *flags, "diagnose", "web-01"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ssh: timed out after 1s connecting to 127.0.0.1:" in result.stdout
    # paramiko logs the same failure from its own thread, traceback included: only for -v.
    assert ("Error reading SSH protocol banner" in result.stderr) == verbose, result.stderr


async def test_a_refused_login_is_named_not_crashed(sshd, services_for):
    host = sshd.host_config()
    host["ssh"]["user"] = "nobody-here"
    services = services_for({"web-01": host})
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "auth"
    assert any("authentication failed for nobody-here@" in e for e in d.errors)
    assert d.findings[0].title == "SSH failed: facts from the host are missing"


async def test_several_hosts_concurrently(sshd, services_for):
    services = services_for({f"web-{n}": sshd.host_config() for n in range(3)})
    found = await diagnose_many(services, ["web-0", "web-1", "web-2"])
    assert [d.host for d in found] == ["web-0", "web-1", "web-2"]
    assert all(d.facts.ssh_status == "ok" for d in found)


@pytest.mark.parametrize("kill", ["prompt", "lingering"])
async def test_a_hung_command_keeps_the_facts_printed_before_it(sshd, kill, request):
    if kill == "lingering":
        request.getfixturevalue("slow_kill")
    from bot.config import SshTarget
    from bot.facts import Facts
    from bot.facts_ssh import SshRunner, gather_ssh

    class Hangs(SshRunner):
        """The real command, with a section that never ends (like ps on a sick box)."""

        async def run(self, command):
            return await super().run(command.replace("m nproc;", "m nproc; sleep 6;"))

    target = SshTarget(host=sshd.host, port=sshd.port, user=sshd.user, key=str(sshd.key_path))
    f = Facts(host="web-01")
    started = time.monotonic()
    await gather_ssh(f, Hangs(target, connect_timeout=CONNECT_TIMEOUT, command_timeout=2))
    assert time.monotonic() - started < 2 + CONNECT_TIMEOUT + 2
    assert f.ssh_status == "ok"
    assert f.memory is not None and f.load is not None  # printed before the hang
    assert f.cpus is None and f.processes is None
    assert any("ran over 2s" in e for e in f.errors)


async def test_a_missing_key_file_is_named(services_for, tmp_path):
    missing = tmp_path / "nope" / "id_ed25519"
    services = services_for(
        {"web-01": {"ssh": {"host": "127.0.0.1", "port": free_port(), "key": str(missing)}}}
    )
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "auth"
    assert any(f"SSH key {missing} for 127.0.0.1:" in e for e in d.errors), d.errors


# -- ssh.known_hosts: host keys checked when configured --------------------------------------


async def test_with_known_hosts_a_listed_host_key_is_accepted(sshd, services_for):
    services = services_for({"web-01": sshd.host_config()}, known_hosts=str(sshd.known_hosts_path))
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "ok", d.errors


async def test_with_known_hosts_an_unknown_host_is_refused_and_named(sshd, services_for, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    services = services_for({"web-01": sshd.host_config()}, known_hosts=str(empty))
    mark = sshd.mark()
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "hostkey"
    assert any(
        f"{sshd.host}:{sshd.port} is not in ssh.known_hosts {empty}" in e
        and f"ssh-keyscan -p {sshd.port} {sshd.host} >> {empty}" in e
        for e in d.errors
    ), d.errors
    assert sshd.commands(mark) == 0  # refused before logging in


async def test_with_known_hosts_a_changed_host_key_is_refused(sshd, services_for, tmp_path):
    other = tmp_path / "known_hosts"
    # Another key under the host's name: what a rebuilt host, or a man in the middle, shows.
    client_key = (sshd.key_path.parent / (sshd.key_path.name + ".pub")).read_text().split()
    other.write_text(f"[{sshd.host}]:{sshd.port} {client_key[0]} {client_key[1]}\n")
    services = services_for({"web-01": sshd.host_config()}, known_hosts=str(other))
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "hostkey"
    assert any("differs from the one in ssh.known_hosts" in e for e in d.errors), d.errors


async def test_a_missing_known_hosts_file_is_named_with_the_fix(sshd, services_for, tmp_path):
    missing = tmp_path / "nope" / "known_hosts"
    services = services_for({"web-01": sshd.host_config()}, known_hosts=str(missing))
    d = await diagnose(services, "web-01")
    assert d.facts.ssh_status == "hostkey"
    assert any(f"ssh.known_hosts {missing} does not exist (create it:" in e for e in d.errors)
