"""Typed runbook parameters (StackStorm-style): each has a kind, a default, bounds and a
description, and turns the ``key=value`` text people type into a checked value.

Validated values stay plain and printable (sizes stay ``"4G"``) so that validating an already
validated dict again gives the same dict: the engine re-checks parameters right before a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bot.errors import InputError

Kind = Literal["size", "int", "bool", "path", "str"]

_SIZE_RE = re.compile(r"^(\d+)([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# Paths go into shell commands (quoted anyway) and /proc/swaps (which escapes spaces).
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}\Z")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def parse_size(text: str) -> int:
    """``4G`` → bytes (binary units: K, M, G, T). Raises InputError."""
    match = _SIZE_RE.match(str(text).strip())
    if not match:
        raise InputError(f"malformed size {text!r} (use e.g. 512M, 4G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(n: int) -> str:
    """Bytes → the shortest exact ``4G`` / ``1536M`` form."""
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def human_size(n: int) -> str:
    """Bytes → ``8.8G`` / ``512M`` for messages (not exact, unlike ``format_size``)."""
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            value = n / _UNITS[unit]
            return (
                f"{value:.0f}{unit}"
                if value >= 100 or value == int(value)
                else f"{value:.1f}{unit}"
            )
    return f"{n}B"


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    description: str
    default: Any = None
    minimum: Any = None  # sizes as text ("1G"), ints as ints
    maximum: Any = None
    required: bool = False

    def describe(self) -> str:
        """One line for ``stabilize runbooks`` and help text."""
        bits: list[str] = [self.kind]
        if self.default is not None:
            default = str(self.default).lower() if self.kind == "bool" else self.default
            bits.append(f"default {default}")
        if self.minimum is not None or self.maximum is not None:
            bits.append(
                f"{self.minimum if self.minimum is not None else ''}–"
                f"{self.maximum if self.maximum is not None else ''}"
            )
        if self.required:
            bits.append("required")
        return f"{self.name} ({', '.join(bits)}): {self.description}"

    def parse(self, raw: Any) -> Any:
        """Check one value; InputError names the parameter and the allowed range."""
        text = str(raw).strip()
        if self.kind == "size":
            try:
                n = parse_size(text)
            except InputError:
                raise InputError(f"{self.name}={text}: not a size (use e.g. 4G)") from None
            low = parse_size(self.minimum) if self.minimum is not None else None
            high = parse_size(self.maximum) if self.maximum is not None else None
            if (low is not None and n < low) or (high is not None and n > high):
                raise InputError(
                    f"{self.name}={text} is out of bounds: use {self.minimum} to {self.maximum}"
                )
            return format_size(n)
        if self.kind == "int":
            if not re.fullmatch(r"[+-]?\d{1,9}", text):
                raise InputError(f"{self.name}={text}: not a whole number")
            value = int(text)
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise InputError(
                    f"{self.name}={text} is out of bounds: use {self.minimum} to {self.maximum}"
                )
            return value
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise InputError(f"{self.name}={text}: use true or false")
        if self.kind == "path":
            if not _PATH_RE.match(text) or "/../" in text + "/" or "//" in text:
                raise InputError(
                    f"{self.name}={text}: use an absolute path of letters, digits, . _ - and /"
                )
            return text.rstrip("/") or "/"
        if not re.fullmatch(r"[A-Za-z0-9._:/-]{1,128}", text):
            raise InputError(f"{self.name}={text}: letters, digits and . _ : / - only")
        return text


def parse_params(runbook: str, params: tuple[Param, ...], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Raw ``key=value`` pairs → checked values with defaults filled in."""
    known = {p.name: p for p in params}
    for key in raw:
        if key not in known:
            names = ", ".join(known) or "none"
            raise InputError(f"{runbook} has no parameter {key!r} (its parameters: {names})")
    out: dict[str, Any] = {}
    for p in params:
        if p.name in raw and raw[p.name] is not None and str(raw[p.name]).strip() != "":
            out[p.name] = p.parse(raw[p.name])
        elif p.name in raw:
            raise InputError(f"{p.name}= is empty: give a value or leave it out")
        elif p.required:
            raise InputError(f"{runbook} needs {p.name}=… ({p.description})")
        elif p.default is not None:
            out[p.name] = p.parse(p.default)
    return out


def parse_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["size=4G", "path=/swap"]`` → dict; InputError on anything without ``=``.

    Shared by the CLI and the slash command; what it echoes back is clipped, so a hostile
    word cannot make the one-line error long."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{pair[:40]!r}: parameters are key=value (e.g. size=4G)")
        if key in out:
            raise InputError(f"{key[:40]} given twice")
        out[key] = value
    return out
