"""The ephemeral answer to ``/stabilize audit [host] [since]``: counts per action and the
latest events. The full story of an incident is ``stabilize audit timeline <incident-id>``.
Pure functions, no I/O."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from bot.blocks import Block, clip, context, escape, header, section

LATEST = 10


def _who(actor: str) -> str:
    return f"<@{actor}>" if actor[:1] in {"U", "W"} and ":" not in actor else f"`{actor}`"


def _line(row: dict[str, Any]) -> str:
    ts = str(row.get("ts", ""))[:16].replace("T", " ")
    parts = [f"`{ts}`", _who(str(row.get("actor", ""))), f"*{row.get('action')}*"]
    for key in ("host", "runbook", "request_id"):
        if row.get(key):
            parts.append(escape(str(row[key])))
    try:
        detail = json.loads(row.get("detail") or "{}")
    except ValueError:
        detail = {}
    reason = detail.get("error") or detail.get("reason") if isinstance(detail, dict) else None
    if reason:
        parts.append("— " + escape(clip(str(reason), 120)))
    return " ".join(parts)


def audit_summary(
    rows: list[dict[str, Any]], *, host: str | None, since_text: str
) -> tuple[str, list[Block]]:
    """``rows`` newest first. Returns ``(text, blocks)``."""
    scope = f"{host} " if host else ""
    title = f"Audit log {scope}— last {since_text}"
    if not rows:
        text = f"{title}: no events."
        return text, [section(text)]
    counts = Counter(str(r["action"]) for r in rows)
    tally = ", ".join(f"{action} {n}" for action, n in sorted(counts.items()))
    incidents = sorted({str(r["incident_id"]) for r in rows if r.get("incident_id")})
    hint = "Full story of an incident: `stabilize audit timeline <incident-id>`"
    if incidents:
        hint += f" (incidents here: {', '.join(incidents[:5])})"
    latest = "\n".join(_line(r) for r in rows[:LATEST])
    text = f"{title}: {len(rows)} events ({tally})"
    blocks = [
        header(title),
        section(f"*{len(rows)} events* — {escape(tally)}"),
        section(f"*Latest*\n{latest}"),
        context(hint),
    ]
    return text, blocks
