"""``--print-systemd-unit``: a hardened unit that runs this agent with the options given."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.agent.options import OPTIONS, AgentConfig

SPOOL = "/var/lib/stabilize-agent"
ENV_FILE = "/etc/stabilize/agent.env"
# Options that describe this run, not the service.
_SKIP = {"once", "print_systemd_unit", "verbose", "spool"}


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_./:,=@%+" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_args(config: AgentConfig) -> list[str]:
    """The agent's options as they differ from the defaults (url and host always)."""
    args = ["--url", config.url, "--host", config.host]
    defaults = AgentConfig(url="", host="", token="")
    for opt in OPTIONS:
        if opt.name in _SKIP or opt.name in ("url", "host"):
            continue
        value = getattr(config, opt.name)
        if value == getattr(defaults, opt.name):
            continue
        if opt.kind == "list":
            text = ",".join(value)
        elif isinstance(value, float):
            text = f"{value:g}" + ("s" if opt.kind == "duration" else "")
        else:
            text = str(value)
        args += [opt.flag, text]
    return args + ["--spool", SPOOL]


def render(config: AgentConfig) -> str:
    code_dir = Path(__file__).resolve().parents[2]  # the directory that holds bot/
    command = " ".join(_quote(a) for a in [sys.executable, "-m", "bot.agent", *exec_args(config)])
    return f"""\
# /etc/systemd/system/stabilize-agent.service
# Put the key in {ENV_FILE} (mode 600): STABILIZE_WEBHOOK_TOKEN=...
# then: systemctl daemon-reload && systemctl enable --now stabilize-agent
[Unit]
Description=stabilize agent for {config.host}: memory, OOM kills, swap, CPU, disk, services
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={command}
Environment=PYTHONPATH={_quote(str(code_dir))} PYTHONUNBUFFERED=1
EnvironmentFile={ENV_FILE}
Restart=always
RestartSec=5
# Be the last thing the OOM killer picks and never become the problem yourself.
OOMScoreAdjust=-500
MemoryMax=64M
MemoryHigh=48M
CPUQuota=20%
TasksMax=16
Nice=5
# Reads only: the whole file system is read-only except the spool.
DynamicUser=yes
StateDirectory=stabilize-agent
StateDirectoryMode=0700
ReadWritePaths={SPOOL}
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
# /dev/kmsg needs CAP_SYSLOG when kernel.dmesg_restrict=1; nothing else is granted.
AmbientCapabilities=CAP_SYSLOG
CapabilityBoundingSet=CAP_SYSLOG
DevicePolicy=closed
DeviceAllow=/dev/kmsg r
SupplementaryGroups=systemd-journal
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0077

[Install]
WantedBy=multi-user.target
"""
