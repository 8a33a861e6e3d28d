"""One way to open SSH connections (fabric) from the config: diagnosis and runbooks share it."""

from __future__ import annotations

import functools
import os
import socket
import time
from typing import Any

from bot.config import SshTarget
from bot.errors import ConfigError


def connection(
    target: SshTarget, timeout: float, gateway: Any = None, known_hosts: str | None = None
) -> Any:
    """A fabric ``Connection`` to ``target`` (through ``gateway``, itself a Connection).

    Every phase — TCP connect, banner, auth, channel — is bounded by ``timeout``: fabric's own
    ``connect_timeout`` is truncated to whole seconds, so paramiko gets its own values. It is
    hermetic: ``~/.ssh/config`` is not read (what the YAML says is what we use) and stdin is
    never forwarded. With ``known_hosts`` (``ssh.known_hosts``) the host key must be in that
    file: an unknown one is refused (fabric alone accepts any key).
    """
    from fabric import Config

    connect_kwargs: dict[str, Any] = {
        "timeout": timeout,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        "channel_timeout": timeout,
    }
    if target.key:
        connect_kwargs.update(
            key_filename=os.path.expanduser(target.key), look_for_keys=False, allow_agent=False
        )
    config = Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
    conn = _connection_class()(
        target.host,
        user=target.user,
        port=target.port,
        connect_kwargs=connect_kwargs,
        gateway=gateway,
        config=config,
    )
    if known_hosts:
        import paramiko

        path = os.path.expanduser(known_hosts)
        if not os.path.isfile(path):
            raise ConfigError(
                f"ssh.known_hosts {known_hosts} does not exist"
                f" (create it: {keyscan(target, known_hosts)})"
            )
        conn.client.load_host_keys(path)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


# Linux only; elsewhere Nagle is still off, only the ACK timing is left to the kernel.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class _PromptSocket(socket.socket):
    """TCP for SSH's small request/answer exchanges (key exchange, auth, channel open,
    exec): Nagle off, and every read acknowledged at once.

    paramiko leaves both on. Then a small packet waits for the ACK of the one before it,
    and the peer delays that ACK: about 40 ms each time on Linux, several times per
    connection (measured: opening one 109 ms → 21 ms, the first channel 45 ms → 1 ms).
    Linux re-arms delayed ACKs after every read, hence the option after each ``recv``.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data and _QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:  # closed by another thread meanwhile: the read itself counts
                pass
        return data


def _prompt_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    """``socket.create_connection``, handed over to a ``_PromptSocket`` with Nagle off."""
    plain = socket.create_connection((host, port), timeout=timeout)
    sock = _PromptSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@functools.cache
def _connection_class() -> type:
    """fabric's ``Connection`` over a ``_PromptSocket`` (fabric is imported lazily)."""
    from fabric import Connection

    class PromptConnection(Connection):  # type: ignore[misc]
        """A gateway's inner connection rides on the gateway's socket, prompt itself."""

        def open(self) -> Any:
            if self.is_connected:
                return super().open()
            sock = None
            if not self.gateway:
                sock = _prompt_socket(self.host, self.port, self.connect_kwargs.get("timeout"))
                self.connect_kwargs["sock"] = sock
            try:
                return super().open()
            except BaseException:
                # A failed open (a refused login or host key) leaves paramiko's transport
                # running, and fabric's close() does not see it: it would hold its thread
                # and socket until the server's LoginGraceTime. Stop the thread, then the
                # socket under it.
                self.client.close()
                if sock is not None:
                    sock.close()
                raise
            finally:
                self.connect_kwargs.pop("sock", None)

    return PromptConnection


def run_bounded(conn: Any, command: str, timeout: float, **kwargs: Any) -> tuple[Any, bool]:
    """``conn.run(command)`` stopped after ``timeout`` seconds: (invoke result, timed out).

    invoke only reports a timeout while its timer thread has finished: the timer closes the
    channel first, so the command can end and be judged in between; then ``run`` returns
    exit -1 with no error. A run that ends without an exit status once its time is up is a
    timeout either way.
    """
    from invoke.exceptions import CommandTimedOut

    started = time.monotonic()
    try:
        result = conn.run(command, hide=True, warn=True, timeout=timeout, **kwargs)
    except CommandTimedOut as exc:
        return exc.result, True
    ended_silent = result.exited in (-1, None)
    return result, ended_silent and time.monotonic() - started >= timeout


def keyscan(target: SshTarget, known_hosts: str) -> str:
    """The command that adds ``target``'s host key to ``known_hosts`` (check it first)."""
    return f"ssh-keyscan -p {target.port} {target.host} >> {known_hosts}"


def host_key_problem(
    exc: BaseException, hops: list[SshTarget], known_hosts: str | None
) -> str | None:
    """A one-line reason when ``exc`` is a host key refused on one of ``hops`` (the target,
    its gateway), else None."""
    import paramiko

    if not known_hosts:
        return None
    if isinstance(exc, paramiko.BadHostKeyException):
        name, changed = exc.hostname, True
    elif isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        name, changed = str(exc).split("'")[1] if "'" in str(exc) else "", False
    else:
        return None
    # paramiko names a host ``host`` on port 22, else ``[host]:port``.
    hop = next(
        (h for h in hops if name in (h.host, f"[{h.host}]:{h.port}")),
        hops[0],
    )
    where = f"{hop.host}:{hop.port}"
    if changed:
        return (
            f"the host key of {where} differs from the one in ssh.known_hosts {known_hosts}:"
            " the host was rebuilt, or something is in between; check before updating the file"
        )
    return (
        f"{where} is not in ssh.known_hosts {known_hosts}"
        f" (check its key, then add it: {keyscan(hop, known_hosts)})"
    )
