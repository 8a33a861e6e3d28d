"""A ``Transport`` that prints to a terminal: ``stabilize shell`` runs the whole bot with it.

Messages are rendered from their Block Kit as plain text; every button gets a number that stays
valid until its message is replaced, so typing the number clicks it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, TextIO

_MENTION = re.compile(r"<([@#])([A-Z0-9]+)(?:\|[^>]*)?>")
_BOLD = re.compile(r"\*([^*\n]+)\*")


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn as terminal text: ``<@U0ALICE>`` → ``@U0ALICE``, entities unescaped."""
    text = _MENTION.sub(lambda m: m.group(1) + m.group(2), mrkdwn)
    text = _BOLD.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@dataclass(frozen=True)
class Button:
    number: int
    label: str
    action_id: str
    value: str
    channel: str
    ts: str


def render(text: str, blocks: list[dict[str, Any]] | None) -> tuple[list[str], list[dict]]:
    """Lines to print and the buttons (in order) of one message."""
    if not blocks:
        return plain(text).splitlines() or [""], []
    lines: list[str] = []
    buttons: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(f"== {plain(block['text']['text'])} ==")
        elif kind == "section":
            if block.get("text"):
                lines += plain(block["text"]["text"]).splitlines()
            accessory = block.get("accessory")
            if isinstance(accessory, dict) and accessory.get("type") == "button":
                buttons.append(accessory)
        elif kind == "context":
            texts = [plain(e.get("text", "")) for e in block.get("elements", [])]
            lines.append("  " + "  ".join(texts))
        elif kind == "actions":
            buttons += [e for e in block.get("elements", []) if e.get("type") == "button"]
        elif kind == "divider":
            lines.append("-" * 40)
    return lines, buttons


class TerminalTransport:
    """Prints posts, updates and ephemeral replies; numbers the buttons."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.buttons: dict[int, Button] = {}
        self._next_button = 1
        self._next_ts = 0

    def _print(self, lines: list[str], indent: str = "") -> None:
        for line in lines:
            print(f"{indent}{line}", file=self.out)
        self.out.flush()

    def _number(self, channel: str, ts: str, buttons: list[dict[str, Any]]) -> str:
        # A replaced message's old buttons stop working, like in Slack.
        for n in [n for n, b in self.buttons.items() if b.ts == ts]:
            del self.buttons[n]
        labels = []
        for b in buttons:
            n = self._next_button
            self._next_button += 1
            label = plain(b.get("text", {}).get("text", "?"))
            self.buttons[n] = Button(n, label, b["action_id"], str(b.get("value", "")), channel, ts)
            labels.append(f"[{n}] {label}")
        return "   ".join(labels)

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        self._next_ts += 1
        ts = f"{self._next_ts}.000000"
        lines, buttons = render(text, blocks)
        indent = "    ↳ " if thread_ts else ""
        head = f"#{channel} (in thread)" if thread_ts else f"#{channel}"
        self._print([f"{head} — stabilize:"], "" if not thread_ts else "    ")
        self._print(lines, indent)
        if buttons:
            self._print([self._number(channel, ts, buttons)], indent)
        return ts

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        lines, buttons = render(text, blocks)
        self._print([f"#{channel} — stabilize (message updated):"])
        self._print(lines, "  ")
        row = self._number(channel, ts, buttons)
        if row:
            self._print([row], "  ")

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        lines, _ = render(text, blocks)
        self._print([f"(only {user} sees this) {lines[0] if lines else ''}", *lines[1:]])
