"""The on-disk queue: every alert is written here before anyone tries to send it, one JSON
file per alert named by a growing sequence number, so the order survives restarts.

Bounded: at ``max_items`` the oldest are dropped and the next alert's details say how many
(``spool_dropped``). When the disk itself is full (the very moment a ``disk_full`` alert
matters), alerts wait in a small in-memory queue instead and keep their place in line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("stabilize.agent")

_MEMORY_MAX = 100
_SUFFIX = ".json"


class Spool:
    def __init__(self, directory: Path, max_items: int = 1000) -> None:
        self.directory = Path(directory)
        self.max_items = max_items
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._memory: deque[tuple[int, bytes]] = deque()
        self._dropped = 0
        names = self._names()
        self._seq = int(names[-1].removesuffix(_SUFFIX)) + 1 if names else 1
        for stale in self.directory.glob("*.tmp"):  # a write cut short by a crash
            stale.unlink(missing_ok=True)

    def _names(self) -> list[str]:
        return sorted(
            n for n in os.listdir(self.directory) if n.endswith(_SUFFIX) and n[:-5].isdigit()
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._names()) + len(self._memory)

    def append(self, body: dict[str, Any]) -> int:
        """Queue one alert body; returns its sequence number."""
        with self._lock:
            names = self._names()
            while len(names) + len(self._memory) >= self.max_items:
                if self._memory and (not names or self._memory[0][0] < int(names[0][:-5])):
                    self._memory.popleft()
                else:
                    (self.directory / names.pop(0)).unlink(missing_ok=True)
                self._dropped += 1
            if self._dropped:
                body.setdefault("details", {})["spool_dropped"] = self._dropped
                log.warning("spool full: dropped the %d oldest alert(s)", self._dropped)
                self._dropped = 0
            seq, self._seq = self._seq, self._seq + 1
            data = json.dumps(body, separators=(",", ":"), sort_keys=False).encode()
            try:
                self._write(seq, data)
            except OSError as exc:
                log.warning(
                    "cannot write to spool %s (%s); keeping alert in memory", self.directory, exc
                )
                if len(self._memory) >= _MEMORY_MAX:
                    self._memory.popleft()
                    self._dropped += 1
                self._memory.append((seq, data))
            return seq

    def _write(self, seq: int, data: bytes) -> None:
        final = self.directory / f"{seq:012d}{_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, final)

    def oldest(self) -> tuple[int, bytes] | None:
        """The next alert to send, ``(seq, body)``, or ``None`` when all are sent."""
        with self._lock:
            for name in self._names():
                seq = int(name[:-5])
                if self._memory and self._memory[0][0] < seq:
                    return self._memory[0]
                try:
                    return seq, (self.directory / name).read_bytes()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.error("unreadable spool file %s (%s); dropping it", name, exc)
                    (self.directory / name).unlink(missing_ok=True)
            return self._memory[0] if self._memory else None

    def remove(self, seq: int) -> None:
        """Forget an alert once it is delivered (or refused for good)."""
        with self._lock:
            if self._memory and self._memory[0][0] == seq:
                self._memory.popleft()
                return
            (self.directory / f"{seq:012d}{_SUFFIX}").unlink(missing_ok=True)
