"""Small helpers shared by the fixtures in tests/conftest.py and by tests themselves.

Import them as ``from helpers import free_port`` (conftest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    *,
    timeout: float = 15.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    ``alive`` is asked between attempts (e.g. ``lambda: proc.poll() is None``) so a server that
    died on start fails fast instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_accepts(port, host):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"the server meant for {host}:{port} exited before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout}s")
        time.sleep(0.05)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that, or raise TimeoutError.

    For waiting on things that happen in another process or thread. Not a speed assertion:
    the timeout is a generous upper bound, only there so a broken test does not hang.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def clean_environ() -> dict[str, str]:
    """This process's environment without AWS, Slack or stabilize settings: a child started
    with it sees none of the developer's (or another test's) accounts, tokens or config."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "STABILIZE_"))
    }


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10
) -> int | None:
    """Ask ``proc`` to stop with ``sig``; SIGKILL it if it is still there after ``timeout``
    seconds. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, merging nested mappings; a ``None`` value deletes."""
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(
    directory: str | Path, data: Mapping[str, Any] | str, name: str = "stabilize.yaml"
) -> Path:
    """Write ``data`` (a mapping, or YAML text as is) to ``directory/name`` and return the path."""
    path = Path(directory) / name
    text = data if isinstance(data, str) else yaml.safe_dump(dict(data), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path
