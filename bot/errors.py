"""The one domain error type and its few flavours.

Users see ``str(error)``: one line that says what is wrong and, where it can, how to fix it.
Logs keep the traceback.
"""

from __future__ import annotations


class StabilizeError(Exception):
    """Base of every error stabilize raises on purpose. ``str()`` is a one-line message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(StabilizeError):
    """The YAML config or the environment is wrong; the message names the file and the key."""

    exit_code = 2


class InputError(StabilizeError):
    """A user or a sender gave us something we refuse (bad host, bad parameter, bad body)."""

    exit_code = 2


class AuthError(StabilizeError):
    """A request could not be authenticated (signature, token)."""

    exit_code = 2


class PolicyError(StabilizeError):
    """Somebody is not allowed to do what they asked (approve, run)."""


class ExecutionError(StabilizeError):
    """A runbook step failed; the message names the step and the error."""
