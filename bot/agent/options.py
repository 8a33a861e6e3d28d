"""The agent's options: one table read by both front ends (``python3 -m bot.agent`` through
argparse, ``stabilize agent`` through click), and the typed ``AgentConfig`` they produce.

Both front ends hand raw strings to ``build_config``, so validation and its one-line errors
are the same whichever way the agent was started.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

KINDS = (
    "oom_kill",
    "memory_pressure",
    "swap_exhausted",
    "cpu_high",
    "disk_full",
    "service_down",
    "custom",
)
SEVERITIES = ("critical", "warning", "info")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
ENDPOINT_PATH = "/alerts/agent"


class AgentConfigError(Exception):
    """A bad option or environment value; the message is one line for the user."""


class Option(NamedTuple):
    """One command-line option: ``kind`` is how ``build_config`` reads its text."""

    name: str  # python name; the flag is --name-with-dashes
    kind: str  # str | duration | percent | int | flag | list
    default: Any
    help: str
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("url", "str", None, "The bot's base URL or its /alerts/agent URL.", "URL"),
    Option(
        "host", "str", None, "This host's name as the bot knows it (default: hostname).", "NAME"
    ),
    Option("interval", "duration", "5s", "How often to check (e.g. 5s, 1m).", "DURATION"),
    Option("proc_root", "str", "/proc", "Where to read /proc from (tests: prepared files).", "DIR"),
    Option(
        "kernel_log",
        "str",
        "auto",
        "Kernel log source: a file path (followed like tail -F), /dev/kmsg, journal, "
        "none, or auto (/dev/kmsg if readable, else journal).",
        "SOURCE",
    ),
    Option("spool", "str", None, "Directory of the on-disk alert queue.", "DIR"),
    Option("spool_max", "int", 1000, "Alerts kept in the spool; beyond, the oldest go.", "N"),
    Option("services", "list", "", "Process names that must be running (comma separated).", "A,B"),
    Option("disk_path", "str", "/", "Filesystem whose free space is watched.", "PATH"),
    Option("hold", "duration", "30s", "A condition must hold this long to fire.", "DURATION"),
    Option("clear", "duration", "60s", "A fired condition must be clear this long.", "DURATION"),
    Option("cpu_hold", "duration", "5m", "Sustained CPU: how long busy before firing.", "DURATION"),
    Option(
        "oom_clear", "duration", "10m", "OOM kills resolve after this long without one.", "DURATION"
    ),
    Option(
        "psi_some", "percent", "20", "Memory PSI some avg10 (%) that counts as pressure.", "PCT"
    ),
    Option("psi_full", "percent", "5", "Memory PSI full avg10 (%) that is critical.", "PCT"),
    Option(
        "mem_available",
        "percent",
        "10",
        "Without PSI: MemAvailable below this % of MemTotal is pressure.",
        "PCT",
    ),
    Option("swap_free", "percent", "10", "Swap free below this % is exhausted.", "PCT"),
    Option("cpu", "percent", "90", "CPU busy at or above this % counts as high.", "PCT"),
    Option("disk_free", "percent", "10", "Free disk below this % is full.", "PCT"),
    Option("timeout", "duration", "10s", "HTTP timeout for one delivery.", "DURATION"),
    Option("retry_max", "duration", "60s", "Longest wait between delivery attempts.", "DURATION"),
    Option("once", "flag", False, "Check once, print what would be sent (JSON lines), exit."),
    Option("print_systemd_unit", "flag", False, "Print a hardened systemd unit and exit."),
    Option("verbose", "flag", False, "Log every check to stderr."),
)


class AgentConfig(NamedTuple):
    """Everything the agent needs; built by ``build_config``."""

    url: str
    host: str
    token: str
    interval: float = 5.0
    proc_root: Path = Path("/proc")
    kernel_log: str = "auto"
    spool: Path = Path("/var/lib/stabilize-agent")
    spool_max: int = 1000
    services: tuple[str, ...] = ()
    disk_path: str = "/"
    hold: float = 30.0
    clear: float = 60.0
    cpu_hold: float = 300.0
    oom_clear: float = 600.0
    psi_some: float = 20.0
    psi_full: float = 5.0
    mem_available: float = 10.0
    swap_free: float = 10.0
    cpu: float = 90.0
    disk_free: float = 10.0
    timeout: float = 10.0
    retry_max: float = 60.0
    once: bool = False
    print_systemd_unit: bool = False
    verbose: bool = False
    argv: tuple[str, ...] = ()


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``5s``, ``250ms``, ``1m30s`` or a bare number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    if not _DURATION.fullmatch(value):
        raise AgentConfigError(f"{what}: malformed duration {text!r} (use e.g. 500ms, 5s, 1m)")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))


def parse_percent(text: str, what: str = "percent") -> float:
    value = str(text).strip().removesuffix("%")
    try:
        number = float(value)
    except ValueError:
        raise AgentConfigError(f"{what}: {text!r} is not a percentage") from None
    if not 0 <= number <= 100:
        raise AgentConfigError(f"{what}: {text!r} must be between 0 and 100")
    return number


def endpoint_url(url: str) -> str:
    """``https://bot.example.com`` → ``https://bot.example.com/alerts/agent``; a URL with a
    path is used as given."""
    parts = urlsplit(url.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise AgentConfigError(f"--url: {url!r} is not an http(s) URL")
    path = parts.path if parts.path not in ("", "/") else ENDPOINT_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def default_spool() -> Path:
    """systemd's StateDirectory when given, else /var/lib when writable, else the user's."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    system = Path("/var/lib/stabilize-agent")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stabilize-agent"


def build_config(
    values: dict[str, Any], env: dict[str, str] | None = None, argv: tuple[str, ...] = ()
) -> AgentConfig:
    """Turn raw option values (strings, flags as bools, ``None`` = default) into a config.

    The key comes from ``STABILIZE_WEBHOOK_TOKEN``; it is needed unless the agent only
    prints (``--once``, ``--print-systemd-unit``).
    """
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    for opt in OPTIONS:
        given = values.get(opt.name)
        raw[opt.name] = opt.default if given is None else given
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        text = raw[opt.name]
        if opt.kind == "duration":
            out[opt.name] = parse_duration(text, opt.flag)
        elif opt.kind == "percent":
            out[opt.name] = parse_percent(text, opt.flag)
        elif opt.kind == "int":
            try:
                out[opt.name] = int(text)
            except (TypeError, ValueError):
                raise AgentConfigError(f"{opt.flag}: {text!r} is not a whole number") from None
        elif opt.kind == "flag":
            out[opt.name] = bool(text)
        elif opt.kind == "list":
            items = text if isinstance(text, list | tuple) else str(text).split(",")
            out[opt.name] = tuple(s.strip() for s in items if s and s.strip())
        else:
            out[opt.name] = text
    only_prints = out["once"] or out["print_systemd_unit"]
    if out["interval"] <= 0:
        raise AgentConfigError("--interval must be more than 0")
    if out["spool_max"] < 1:
        raise AgentConfigError("--spool-max must be at least 1")
    if out["timeout"] <= 0 or out["retry_max"] <= 0:
        raise AgentConfigError("--timeout and --retry-max must be more than 0")
    host = out["host"] or os.uname().nodename.split(".")[0]
    if not HOST_RE.match(host):
        raise AgentConfigError(f"--host: {host!r} is not a host name")
    out["host"] = host
    url = out["url"]
    if url:
        out["url"] = endpoint_url(url)
    elif not only_prints:
        raise AgentConfigError("--url is required (the bot's URL, e.g. https://bot.example.com)")
    else:
        out["url"] = "https://bot.example.com" + ENDPOINT_PATH
    token = env.get("STABILIZE_WEBHOOK_TOKEN", "")
    if not token and not only_prints:
        raise AgentConfigError(
            "STABILIZE_WEBHOOK_TOKEN is not set (the same value as on the bot; it signs alerts)"
        )
    out["token"] = token
    out["proc_root"] = Path(out["proc_root"])
    out["spool"] = Path(out["spool"]) if out["spool"] else default_spool()
    return AgentConfig(**out, argv=argv)


def parse_argv(argv: list[str]) -> dict[str, Any]:
    """Option values from a command line (``python3 -m bot.agent …``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m bot.agent",
        description="stabilize agent: watches memory, OOM kills, swap, CPU, disk and services "
        "and sends signed alerts to the bot's /alerts/agent.",
    )
    for opt in OPTIONS:
        if opt.kind == "flag":
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", help=opt.help)
        else:
            default = f" (default: {opt.default})" if opt.default not in (None, "") else ""
            parser.add_argument(
                opt.flag, dest=opt.name, default=None, metavar=opt.metavar, help=opt.help + default
            )
    return vars(parser.parse_args(argv))
