"""A real OpenSSH server on 127.0.0.1 for tests: its own host key, one authorized client key.

Everything lives in one temporary directory; nothing under /etc/ssh or ~/.ssh is read or
written. The only trace on the machine is ``/run/sshd`` (sshd's privilege separation folder,
which it refuses to start without when run as root); it is left in place because another
test session may be using it at the same time.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import LOOPBACK, free_port, stop_process, wait_for_port, wait_until

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"

# Lines sshd writes at LogLevel VERBOSE that tests count.
ACCEPTED = "Accepted publickey for "
SESSION = "Starting session: "


def missing_reason() -> str | None:
    """Why an sshd cannot be started here, or None when it can."""
    if not Path(SSHD).exists():
        return f"OpenSSH server not installed ({SSHD} missing): apt-get install openssh-server"
    if shutil.which(SSH_KEYGEN) is None:
        return "ssh-keygen not installed: apt-get install openssh-client"
    return None


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "stabilize-tests", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@dataclass
class SshServer:
    """What a test needs to reach the server. ``connect()`` gives a fabric Connection."""

    directory: Path
    host: str = LOOPBACK
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen[bytes] | None = None
    # Like a server's stock non-interactive shell, skip the login user's ~/.bashrc (bash
    # reads it for every SSH command). This machine's root .bashrc runs pyenv init, about
    # 100 ms of CPU per login that no remote host would charge to the bot.
    lean_login: bool = True

    @property
    def key_path(self) -> Path:
        """Private key of the authorized client (ed25519, no passphrase)."""
        return self.directory / "client_key"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def known_hosts_path(self) -> Path:
        """A known_hosts file holding this server's host key, for strict host key checking."""
        return self.directory / "known_hosts"

    @property
    def host_key_pub(self) -> str:
        return (self.directory / "host_key.pub").read_text().strip()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> SshServer:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        _keygen(d / "host_key")
        _keygen(d / "client_key")
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        if os.geteuid() == 0:
            # As root, sshd insists on its privilege separation folder.
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.port = free_port()
        config = d / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {d / 'host_key'}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "AllowTcpForwarding yes",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    # Many tests share this server; do not let sshd throttle new connections.
                    "MaxStartups 100:30:200",
                    "MaxSessions 50",
                    "Subsystem sftp internal-sftp",
                    # bash sources ~/.bashrc under sshd only as a top-level shell (SHLVL < 2).
                    "SetEnv SHLVL=1" if self.lean_login else "",
                    "",
                ]
            )
        )
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self.host_key_pub}\n")
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.host, alive=lambda: self.process.poll() is None)
        except Exception as exc:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"sshd did not start: {exc}\n{log}") from None
        return self

    def stop(self) -> None:
        """Stop every connection process the listener forked, then the listener, by pid.

        Connections go first so the listener itself reaps them: killed after it, they would
        linger as zombies until init collects them.
        """
        proc = self.process
        if proc is None:
            return
        # Per-connection processes call setsid(), so they are not in our process group.
        children = _children_of(proc.pid)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not _children_of(proc.pid), timeout=5)
        except TimeoutError:
            pass  # the listener goes next either way
        stop_process(proc, timeout=5)
        self.process = None

    # -- for tests -----------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> Any:
        """A fabric ``Connection`` to this server as ``user`` with the client key.

        Hermetic: ``~/.ssh/config`` and agent keys are not used. Close it when done (or use it
        as a context manager).
        """
        from fabric import Config, Connection

        connect_kwargs = {
            "key_filename": str(self.key_path),
            "look_for_keys": False,
            "allow_agent": False,
        }
        connect_kwargs.update(kwargs.pop("connect_kwargs", {}))
        # in_stream=False: never forward our stdin (pytest's is a capture that refuses reads).
        config = Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})
        return Connection(
            self.host,
            user=self.user,
            port=self.port,
            connect_kwargs=connect_kwargs,
            connect_timeout=kwargs.pop("connect_timeout", 10),
            config=config,
            **kwargs,
        )

    def host_config(self) -> dict[str, Any]:
        """The ``hosts.<name>`` entry of a stabilize YAML config that points at this server."""
        return {
            "ssh": {
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "key": str(self.key_path),
            }
        }

    def mark(self) -> int:
        """The current end of the log; pass it as ``since`` to count only what follows."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log(self, since: int = 0) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def connections(self, since: int = 0) -> int:
        """Authenticated SSH connections (one per ``Accepted publickey`` line)."""
        return self.log(since).count(ACCEPTED)

    def commands(self, since: int = 0) -> int:
        """Sessions started: one per command run (``exec``), shell or sftp."""
        return self.log(since).count(SESSION)

    def command_lines(self, since: int = 0) -> list[str]:
        return [line for line in self.log(since).splitlines() if SESSION in line]

    def wait_for_log(
        self, pattern: str, count: int = 1, since: int = 0, timeout: float = 10
    ) -> str:
        """Wait until ``pattern`` (a regex) matched ``count`` times; sshd logs asynchronously."""
        regex = re.compile(pattern)

        def enough() -> str | None:
            text = self.log(since)
            return text if len(regex.findall(text)) >= count else None

        return wait_until(enough, timeout=timeout)


def _children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (read from /proc; no external tools)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out
