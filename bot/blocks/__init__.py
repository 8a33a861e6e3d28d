"""Block Kit builders: pure functions, no I/O. One module per kind of message."""

from __future__ import annotations

from typing import Any

Block = dict[str, Any]

# Slack's limits: 3,000 chars in a section's text, 50 blocks, 75 chars in a button label.
MAX_TEXT = 2900


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150)}}


def section(markdown: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(markdown)}}


def context(*markdown: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(m)} for m in markdown]}


def divider() -> Block:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    b: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(text, 75)},
        "action_id": action_id,
        "value": value,
    }
    if style in ("primary", "danger"):
        b["style"] = style
    return b


def actions(*buttons: Block, block_id: str | None = None) -> Block:
    b: Block = {"type": "actions", "elements": list(buttons)}
    if block_id:
        b["block_id"] = block_id
    return b


def escape(text: str) -> str:
    """Escape user text for mrkdwn (Slack needs only &, < and > escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
