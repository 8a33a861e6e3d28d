"""Durations as people type them: ``30s``, ``15m``, ``2h``, ``7d``, or combined (``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.errors import InputError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
# Longer than this overflows datetime arithmetic (now - since) long before it means anything.
MAX_SECONDS = 100 * 365 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """Return seconds for ``text``; a bare number is seconds. Raises InputError when malformed."""
    if isinstance(text, bool):
        raise InputError(f"malformed duration {text!r} (use e.g. 30s, 15m, 2h, 7d)")
    if isinstance(text, int | float):
        if text < 0:
            raise InputError(f"malformed duration {text!r}: must not be negative")
        return _bounded(text, float(text))
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return _bounded(text, float(value))
    if not _WHOLE.fullmatch(value):
        raise InputError(f"malformed duration {text!r} (use e.g. 30s, 15m, 2h, 7d)")
    return _bounded(text, sum(float(n) * _UNITS[u] for n, u in _PART.findall(value)))


def _bounded(text: str | int | float, seconds: float) -> float:
    if not seconds <= MAX_SECONDS:  # also refuses inf and nan
        raise InputError(f"duration {str(text)[:40]!r} is too long (at most 100 years)")
    return seconds


def parse_timedelta(text: str | int | float) -> timedelta:
    return timedelta(seconds=parse_duration(text))


def format_duration(seconds: float) -> str:
    """Short human form: ``45s``, ``3m 20s``, ``2h 5m``, ``1d 2h``."""
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {sec}s" if sec else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
