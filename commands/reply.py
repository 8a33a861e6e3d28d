"""What a slash command or a click answers, independent of Slack or the terminal.

``handle_command`` / ``handle_action`` return a ``Reply`` at once (that is the ack); the slow
part, if any, is ``followup``, which the transport runs after acknowledging and which talks
back through a ``Responder`` (Slack's ``respond`` / ``response_url``, or the terminal).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

Blocks = list[dict[str, Any]]


class Responder(Protocol):
    async def __call__(
        self, text: str, blocks: Blocks | None = None, *, replace_original: bool = False
    ) -> None:
        """Send an ephemeral line to the user, or replace the clicked message."""


@dataclass
class Reply:
    text: str = ""  # the ephemeral line for the user (the ack of a slash command)
    blocks: Blocks | None = None
    update: tuple[str, Blocks] | None = None  # replaces the clicked message (e.g. no buttons)
    followup: Callable[[Responder], Awaitable[None]] | None = None  # runs after the ack
    error: bool = False
    # The updated message already tells the clicker everything; Slack skips ``text`` then.
    update_says_it_all: bool = False


def error(text: str) -> Reply:
    return Reply(text=text, error=True)
