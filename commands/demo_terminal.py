"""The demo's terminal: a ``Transport`` that shows the bot's messages as rich panels.

It renders Block Kit like ``stabilize shell`` (``bot.terminal``), numbers every button, and
prints progress posts one line each so the demo's story reads at a glance.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from bot.terminal import plain

# Slack's short codes the bot uses, as the terminal can show them.
_EMOJI = {
    ":red_circle:": "🔴",
    ":large_orange_circle:": "🟠",
    ":large_yellow_circle:": "🟡",
    ":large_green_circle:": "🟢",
    ":white_check_mark:": "✅",
    ":x:": "❌",
    ":gear:": "⚙",
    ":hourglass_flowing_sand:": "⏳",
    ":no_entry:": "⛔",
    ":memo:": "📝",
    ":warning:": "⚠",
    ":leftwards_arrow_with_hook:": "↩",
}


def rendered(text: str, blocks: list[dict[str, Any]] | None) -> tuple[str, list[dict]]:
    """A message as ``stabilize shell`` renders it (bot.terminal), with known emoji shown."""
    from bot.terminal import render

    lines, buttons = render(text, blocks)
    body = "\n".join(lines)
    for code, char in _EMOJI.items():
        body = body.replace(code, char)
    return body, buttons


_STEPS_RE = re.compile(r": (\d+) steps\b")


class DemoTerminal:
    """A ``Transport`` that prints to the terminal and numbers every button it shows.

    Like ``bot.terminal.TerminalTransport`` (same rendering), with rich panels and one line
    per progress post, so the demo's story reads at a glance."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.buttons: list[dict[str, Any]] = []  # button number n is self.buttons[n - 1]
        self.messages: dict[str, dict[str, Any]] = {}
        self.steps_total: int | None = (
            None  # from the engine's "…: 7 steps" post  # ts -> {"key", "buttons"}
        )
        self._n = 0

    def _show(self, title: str, text: str, blocks: list[dict] | None, style: str) -> list:
        body, buttons = rendered(text, blocks)
        found = _STEPS_RE.search(body)
        if found:
            self.steps_total = int(found.group(1))
        if not buttons and "\n" not in body.strip() and len(body) < 200:
            # Progress lines in a thread: one line each, not a box each.
            self.console.print(Text(f"  ↳ {body.strip()}", style="dim" if "▶" in body else ""))
            return []
        shown = Text(body)
        numbered = []
        for button in buttons:
            self.buttons.append(button)
            numbered.append(button)
            label = plain(str((button.get("text") or {}).get("text") or button.get("action_id")))
            shown.append(f"\n  [{len(self.buttons)}] {label}", style="bold cyan")
        self.console.print(Panel(shown, title=title, title_align="left", border_style=style))
        return numbered

    def show_update(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        """An updated message: its first and last lines say what changed."""
        body, _ = rendered(text, blocks)
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 2:
            lines = [lines[0], "…", lines[-1]]
        self._show("(updated)", "\n".join(lines), [], "green")

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        self._n += 1
        ts = f"{time.time():.6f}"
        key = ((metadata or {}).get("event_payload") or {}).get("key", "")
        where = f"#{channel}" + (" · thread" if thread_ts else "")
        buttons = self._show(f"{where} · {key}", text, blocks, "blue" if thread_ts else "magenta")
        self.messages[ts] = {"key": key, "buttons": buttons}
        return ts

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        self.show_update(text, blocks)

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        self._show(f"only visible to {user}", text, blocks, "yellow")
