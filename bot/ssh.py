"""One way to open SSH connections (fabric) from the config: diagnosis and runbooks share it."""

from __future__ import annotations

import os
from typing import Any

from bot.config import SshTarget


def connection(target: SshTarget, timeout: float, gateway: Any = None) -> Any:
    """A fabric ``Connection`` to ``target`` (through ``gateway``, itself a Connection).

    Every phase — TCP connect, banner, auth, channel — is bounded by ``timeout``: fabric's own
    ``connect_timeout`` is truncated to whole seconds, so paramiko gets its own values. It is
    hermetic: ``~/.ssh/config`` is not read (what the YAML says is what we use) and stdin is
    never forwarded.
    """
    from fabric import Config, Connection

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
    return Connection(
        target.host,
        user=target.user,
        port=target.port,
        connect_kwargs=connect_kwargs,
        gateway=gateway,
        config=config,
    )
