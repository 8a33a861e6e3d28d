"""The kernel log, followed without a shell: a file (like ``tail -F``), ``/dev/kmsg`` read
non-blocking from its end, or ``journalctl -k -f`` as a child process (no shell, fixed
arguments). And the parser that turns the OOM killer's lines into one event per kill.

Every source has ``poll() -> list[str]`` (never blocks, never raises) and ``close()``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from typing import Any, Protocol

log = logging.getLogger("stabilize.agent")

_READ_CHUNK = 64 * 1024
_MAX_PER_POLL = 256 * 1024  # a flood of kernel messages is read over several polls
_MAX_LINE = 4096  # longer lines are cut; OOM lines are ~250 characters


class Source(Protocol):
    name: str

    def poll(self) -> list[str]: ...

    def close(self) -> None: ...


class NoSource:
    """No kernel log: OOM kills are not seen (said once in the log by whoever chose it)."""

    name = "none"

    def poll(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


class _Lines:
    """Splits bytes into lines, keeping a bounded partial line between reads."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        if len(self.partial) > _MAX_LINE:
            lines.append(self.partial[:_MAX_LINE])
            self.partial = b""
        return [line[:_MAX_LINE].decode("utf-8", "replace") for line in lines]


class FileSource:
    """Follows a log file like ``tail -F``: starts at its end (or at the start with
    ``from_start``), notices rotation (new inode) and truncation, waits for a missing file."""

    def __init__(self, path: str, *, from_start: bool = False) -> None:
        self.name = path
        self.path = path
        self._fh: Any = None
        self._inode: tuple[int, int] | None = None
        self._lines = _Lines()
        self._complained = False
        self._open(seek_end=not from_start)

    def _open(self, *, seek_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError as exc:
            if not self._complained:
                log.warning(
                    "kernel log %s is not readable yet (%s); will keep trying",
                    self.path,
                    exc.strerror,
                )
                self._complained = True
            return False
        if seek_end:
            fh.seek(0, os.SEEK_END)
        st = os.fstat(fh.fileno())
        self._fh, self._inode = fh, (st.st_dev, st.st_ino)
        self._lines = _Lines()
        if self._complained:
            log.warning("kernel log %s is readable now", self.path)
            self._complained = False
        return True

    def poll(self) -> list[str]:
        if self._fh is None and not self._open(seek_end=False):
            return []
        lines = self._read()
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # rotated away; keep the old file until a new one appears
        if (st.st_dev, st.st_ino) != self._inode:
            lines += self._read()  # the rest of the rotated file first
            self._fh.close()
            self._fh = None
            if self._open(seek_end=False):
                lines += self._read()
        elif st.st_size < self._fh.tell():
            self._fh.seek(0)  # truncated in place (copytruncate)
            self._lines = _Lines()
            lines += self._read()
        return lines

    def _read(self) -> list[str]:
        out: list[str] = []
        budget = _MAX_PER_POLL
        try:
            while budget > 0:
                data = self._fh.read(min(_READ_CHUNK, budget))
                if not data:
                    break
                budget -= len(data)
                out += self._lines.feed(data)
        except OSError as exc:
            log.warning("reading kernel log %s failed: %s", self.path, exc)
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class KmsgSource:
    """``/dev/kmsg``: one record per read, non-blocking; starts at the end unless
    ``from_start`` (the ring buffer's oldest record)."""

    def __init__(
        self, path: str = "/dev/kmsg", *, from_start: bool = False, fd: int | None = None
    ) -> None:
        self.name = path
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK) if fd is None else fd
        if not from_start:
            os.lseek(self._fd, 0, os.SEEK_END)

    def poll(self) -> list[str]:
        out: list[str] = []
        budget = _MAX_PER_POLL
        while self._fd is not None and budget > 0:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # records were overwritten before we read them; go on
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                log.warning("reading %s failed (%s); OOM kills will not be seen", self.name, exc)
                self.close()
                break
            if not record:
                break
            budget -= len(record)
            # Continuation lines (" SUBSYSTEM=…") follow the message; only the first counts.
            out.append(record.split(b"\n", 1)[0][:_MAX_LINE].decode("utf-8", "replace"))
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JournalSource:
    """``journalctl -k -f -o short-monotonic -n 0``, as a child without a shell, read
    non-blocking. For hosts where ``/dev/kmsg`` is closed to us but the journal is not."""

    def __init__(self, *, from_start: bool = False) -> None:
        self.name = "journal"
        binary = shutil.which("journalctl")
        if binary is None:
            raise OSError(errno.ENOENT, "journalctl not found")
        self._follow = not from_start
        follow = ["-b", "--no-tail"] if from_start else ["-f", "-n", "0"]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [binary, "-k", "-q", "--no-pager", "-o", "short-monotonic", *follow],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._lines = _Lines()

    def poll(self) -> list[str]:
        if self._proc is None or self._proc.stdout is None:
            return []
        out: list[str] = []
        budget = _MAX_PER_POLL
        fd = self._proc.stdout.fileno()
        while budget > 0:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                break
            if not data:
                if self._follow:
                    log.warning("journalctl ended; OOM kills will not be seen")
                self.close()
                break
            budget -= len(data)
            out += self._lines.feed(data)
        return out

    @property
    def finished(self) -> bool:
        """journalctl without ``-f`` has printed everything and ended."""
        return self._proc is None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


def read_through(source: Source, timeout: float = 10.0) -> list[str]:
    """Every line a source opened ``from_start`` has now (for ``--once``), bounded in time."""
    import time

    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        batch = source.poll()
        lines += batch
        if not batch:
            if getattr(source, "finished", True):
                break
            time.sleep(0.05)  # journalctl is still starting or writing
    return lines


def open_source(spec: str, *, from_start: bool = False) -> Source:
    """The source named by ``--kernel-log``; one that cannot be opened falls back to the
    others (``/dev/kmsg``, then the journal) and says so once."""
    if spec == "none":
        return NoSource()
    if spec not in ("auto", "journal", "/dev/kmsg"):
        return FileSource(spec, from_start=from_start)
    order = {"auto": ["/dev/kmsg", "journal"], "/dev/kmsg": ["/dev/kmsg", "journal"]}
    tried: list[str] = []
    for name in order.get(spec, ["journal", "/dev/kmsg"]):
        try:
            source: Source = (
                JournalSource(from_start=from_start)
                if name == "journal"
                else KmsgSource(name, from_start=from_start)
            )
        except OSError as exc:
            tried.append(f"{name}: {exc.strerror or exc}")
            continue
        if tried:
            log.warning("kernel log: %s; using %s instead", "; ".join(tried), source.name)
        return source
    log.warning("kernel log unreadable (%s); OOM kills will not be seen", "; ".join(tried))
    return NoSource()


# -- the OOM killer's lines --------------------------------------------------------------

_KMSG_PREFIX = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;")
_BRACKET_TIME = re.compile(r"\[\s*(\d+\.\d+)\] ")
_SYSLOG_KERNEL = re.compile(r"\bkernel: ")
_KILLED = re.compile(
    r"Killed process (?P<pid>\d+) \((?P<name>.*?)\) total-vm:(?P<vm>\d+)kB, "
    r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB"
    r"(?:, shmem-rss:(?P<shmem>\d+)kB)?(?:,? UID:(?P<uid>\d+))?"
    r"(?: pgtables:(?P<pgtables>\d+)kB)?(?: oom_score_adj:(?P<adj>-?\d+))?"
)
_OOM_KILL = re.compile(r"oom-kill:(\S+)")
_INVOKED = re.compile(r"^(?P<name>\S.*?) invoked oom-killer:")


class OomKill:
    """One process shot by the OOM killer."""

    def __init__(self, pid: int, name: str, *, kernel_time: float | None = None) -> None:
        self.pid = pid
        self.name = name
        self.rss_kb: int | None = None
        self.details: dict[str, Any] = {}
        self.kernel_time = kernel_time  # seconds since boot, when the line carries it

    def summary(self, host: str) -> str:
        rss = f", RSS {_human_kb(self.rss_kb)}" if self.rss_kb is not None else ""
        return f"OOM killer killed {self.name} (pid {self.pid}{rss}) on {host}"


def _human_kb(kb: int) -> str:
    if kb >= 1024 * 1024:
        return f"{kb / 1024 / 1024:.1f} GiB"
    if kb >= 1024:
        return f"{kb / 1024:.0f} MiB"
    return f"{kb} kB"


def _kernel_time(line: str) -> tuple[str, float | None]:
    """The kernel's message without a ``/dev/kmsg``, syslog or ``[seconds]`` prefix, and
    the kernel time (seconds since boot) when the line carries it. Handles raw records,
    ``dmesg``/kern.log lines and ``journalctl -o short-monotonic`` (``[t] host kernel: …``)."""
    match = _KMSG_PREFIX.match(line)
    if match:
        return line[match.end() :], int(match.group(3)) / 1e6
    stamp = _BRACKET_TIME.search(line)
    ktime = float(stamp.group(1)) if stamp else None
    syslog = _SYSLOG_KERNEL.search(line)
    if syslog:
        line = line[syslog.end() :]
    line = line.lstrip()
    bracket = _BRACKET_TIME.match(line)
    return (line[bracket.end() :] if bracket else line), ktime


class OomParser:
    """Feeds kernel log lines, yields one ``OomKill`` per kill.

    A kill shows up as ``<task> invoked oom-killer: …``, ``oom-kill:constraint=…,task=…,
    pid=…`` and ``Out of memory: Killed process <pid> (<name>) total-vm:…`` (the one with
    the RSS). The kill is reported on the ``Killed process`` line, with what the others
    said; an ``oom-kill:`` line whose ``Killed process`` line never comes is reported by
    ``flush`` after ``grace`` seconds. Memory stays bounded: a few pending kills, a short
    list of recent pids.
    """

    def __init__(self, grace: float = 1.0) -> None:
        self.grace = grace
        self._pending: dict[int, tuple[float, OomKill]] = {}
        self._recent: deque[int] = deque(maxlen=64)
        self._invoker: str | None = None

    def feed(self, line: str, now: float) -> list[OomKill]:
        if "oom" not in line.lower() and "Killed process" not in line:
            return []
        text, ktime = _kernel_time(line)
        invoked = _INVOKED.search(text)
        if invoked:
            self._invoker = invoked.group("name")[-64:]
            return []
        killed = _KILLED.search(text)
        if killed:
            return self._killed(killed, ktime, text)
        oom_kill = _OOM_KILL.search(text)
        if oom_kill:
            return self._oom_kill_line(oom_kill.group(1), ktime, now)
        return []

    def _killed(self, m: re.Match[str], ktime: float | None, text: str) -> list[OomKill]:
        pid = int(m.group("pid"))
        _, kill = self._pending.pop(pid, (0.0, None))
        if kill is None:
            if pid in self._recent:
                return []
            kill = OomKill(pid, m.group("name"), kernel_time=ktime)
            self._note_invoker(kill)
        anon, file_, shmem = (int(m.group(g) or 0) for g in ("anon", "file", "shmem"))
        kill.name = m.group("name") or kill.name
        kill.rss_kb = anon + file_ + shmem
        kill.details.update(
            total_vm_kb=int(m.group("vm")),
            anon_rss_kb=anon,
            file_rss_kb=file_,
            shmem_rss_kb=shmem,
        )
        for group, key in (("uid", "uid"), ("pgtables", "pgtables_kb"), ("adj", "oom_score_adj")):
            if m.group(group) is not None:
                kill.details[key] = int(m.group(group))
        if "Memory cgroup out of memory" in text:
            kill.details["constraint"] = kill.details.get("constraint", "CONSTRAINT_MEMCG")
        kill.details["kernel_line"] = text.strip()[:400]
        self._recent.append(pid)
        return [kill]

    def _oom_kill_line(self, fields: str, ktime: float | None, now: float) -> list[OomKill]:
        info = dict(part.partition("=")[::2] for part in fields.split(","))
        try:
            pid = int(info.get("pid", ""))
        except ValueError:
            return []
        if pid in self._recent or pid in self._pending:
            return []  # its Killed process line came first and was already reported
        kill = OomKill(pid, info.get("task", "?"), kernel_time=ktime)
        for key, name in (("constraint", "constraint"), ("task_memcg", "cgroup")):
            if info.get(key):
                kill.details[name] = info[key][:200]
        if info.get("uid", "").isdigit():
            kill.details["uid"] = int(info["uid"])
        self._note_invoker(kill)
        out = []
        if len(self._pending) >= 16:  # a storm: report the oldest now rather than grow
            oldest = min(self._pending, key=lambda p: self._pending[p][0])
            out.append(self._pending.pop(oldest)[1])
            self._recent.append(oldest)
        self._pending[pid] = (now, kill)
        return out

    def _note_invoker(self, kill: OomKill) -> None:
        if self._invoker:
            kill.details["invoked_by"] = self._invoker
            self._invoker = None

    def flush(self, now: float) -> list[OomKill]:
        """Kills whose ``Killed process`` line has not come within ``grace`` seconds."""
        late = [pid for pid, (seen, _) in self._pending.items() if now - seen >= self.grace]
        out = []
        for pid in late:
            out.append(self._pending.pop(pid)[1])
            self._recent.append(pid)
        return out
