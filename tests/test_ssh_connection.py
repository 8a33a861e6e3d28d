"""How bot.ssh connects and runs, against the real sshd: sockets that do not wait on
delayed ACKs, through a gateway too; and a command that runs over its time is reported as a
timeout even when invoke's own timer thread is still closing the channel when the command
ends (a race CI once lost)."""

from __future__ import annotations

import socket
import time

import pytest
from helpers import free_port

from bot.config import SshTarget
from bot.errors import ExecutionError
from bot.ssh import connection, run_bounded


def target(sshd) -> SshTarget:
    return SshTarget(host=sshd.host, port=sshd.port, user=sshd.user, key=str(sshd.key_path))


def nodelay(conn) -> int:
    return conn.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_the_tcp_socket_sends_small_packets_at_once(sshd):
    conn = connection(target(sshd), 5)
    try:
        assert conn.run("echo ok", hide=True).stdout == "ok\n"
        assert nodelay(conn)
    finally:
        conn.close()
    assert conn.connect_kwargs.get("sock") is None  # a reconnect opens a new socket


def test_through_a_gateway_the_outer_socket_is_the_prompt_one(sshd):
    gateway = connection(target(sshd), 5)
    conn = connection(target(sshd), 5, gateway)
    try:
        assert conn.run("echo ok", hide=True).stdout == "ok\n"
        assert nodelay(gateway)
        assert not hasattr(conn.transport.sock, "getsockopt")  # a channel of the gateway
    finally:
        conn.close()
        gateway.close()


def test_a_closed_port_is_refused_and_leaves_no_socket_behind():
    conn = connection(SshTarget(host="127.0.0.1", port=free_port(), user="root"), 2)
    with pytest.raises(ConnectionRefusedError):
        conn.open()
    assert "sock" not in conn.connect_kwargs


@pytest.mark.parametrize("refusal", ["unknown host key", "wrong user", "wrong user via gateway"])
def test_a_refused_connection_stops_paramikos_thread_in_order(sshd, tmp_path, monkeypatch, refusal):
    """A failed open leaves paramiko's transport running, and fabric's close() does not see
    it (it would hold a thread and a socket until the server's LoginGraceTime). Closing the
    socket under the running thread instead makes paramiko log EBADF from that thread."""
    import logging

    import paramiko

    transports: list[paramiko.Transport] = []  # this test's, not other tests'
    start = paramiko.Transport.start_client

    def recorded(self: paramiko.Transport, *args: object, **kwargs: object) -> object:
        transports.append(self)
        return start(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "start_client", recorded)
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stranger = SshTarget(host=sshd.host, port=sshd.port, user="nobody-here", key=str(sshd.key_path))
    gateway = connection(target(sshd), 5) if "gateway" in refusal else None
    if refusal == "unknown host key":
        conn, expected = connection(target(sshd), 5, known_hosts=str(empty)), "known_hosts"
    else:
        conn, expected = connection(stranger, 5, gateway), "Authentication failed"
    handler = Collect(level=logging.ERROR)
    logger = logging.getLogger("paramiko")
    logger.addHandler(handler)
    try:
        with pytest.raises(paramiko.SSHException, match=expected):
            conn.open()
        mine = transports[1:] if gateway else transports  # the gateway's own stays up
        for t in mine:
            t.join(2)
    finally:
        logger.removeHandler(handler)
        if gateway:
            gateway.close()
    assert len(mine) == 1
    assert not mine[0].is_alive()
    assert errors == []


def test_a_timeout_is_reported_while_the_timer_still_runs(sshd, slow_kill):
    conn = connection(target(sshd), 5)
    try:
        started = time.monotonic()
        result, timed_out = run_bounded(conn, "echo before; sleep 10", 1)
    finally:
        conn.close()
    assert timed_out
    assert result.stdout == "before\n"
    assert time.monotonic() - started < 5


def test_a_failing_command_is_not_a_timeout(sshd):
    conn = connection(target(sshd), 5)
    try:
        result, timed_out = run_bounded(conn, "echo no >&2; exit 3", 5)
    finally:
        conn.close()
    assert (result.exited, result.stderr, timed_out) == (3, "no\n", False)


def test_a_runbook_command_over_its_time_names_the_timeout(
    sshd, slow_kill, settings_factory, tmp_path
):
    from diagnosis_fixtures import make_services

    from runbooks.executors.ssh import SshExecutor

    services = make_services(settings_factory(hosts={"web-01": sshd.host_config()}), tmp_path)
    executor = SshExecutor(services, "web-01", services.settings.hosts["web-01"])
    try:
        with pytest.raises(ExecutionError, match=r"^timed out after 1s on web-01$"):
            executor.run("sleep 10", timeout=1)
    finally:
        executor.close()
        services.close()
