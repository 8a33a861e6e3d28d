"""Block Kit for a diagnosis: header, findings with evidence, recommended runbooks as buttons.

Pure functions, no I/O. A recommendation button has ``action_id`` ``recommend_<n>`` (1-based)
and ``value`` = the stored recommendation id; the approvals flow handles the click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.blocks import Block, actions, button, clip, context, divider, escape, header, section

if TYPE_CHECKING:
    from bot.diagnosis import Diagnosis

ICON = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_green_circle:",
}
MAX_FINDINGS = 12  # Slack allows 50 blocks; a diagnosis should be readable at a glance
MAX_EVIDENCE = 8


def diagnosis_text(d: Diagnosis) -> str:
    """The notification / fallback text: the worst finding and what is recommended."""
    top = d.findings[0].title if d.findings else "no findings"
    recs = ", ".join(r.label() for r in d.recommendations)
    tail = f" Recommended: {recs}." if recs else ""
    return f"Diagnosis of {d.host}: {top}.{tail}"


def _source_line(d: Diagnosis) -> str:
    f = d.facts
    parts = []
    if f.source:
        parts.append(f"host facts: {escape(f.source)} ({f.ssh_status})")
    if f.instance:
        parts.append(f"AWS: {f.instance.id} {f.instance.type} {f.instance.state}")
    parts.append(f"took {f.elapsed_s:.1f}s")
    return " · ".join(parts)


def diagnosis_blocks(d: Diagnosis, rec_ids: list[int] | None = None) -> list[Block]:
    """The message. ``rec_ids`` are the stored ids of ``d.recommendations``, in order; without
    them the recommendations are listed but get no buttons."""
    blocks: list[Block] = [header(f"Diagnosis: {d.host}"), context(_source_line(d))]
    for finding in d.findings[:MAX_FINDINGS]:
        lines = [f"{ICON.get(finding.severity, '')} *{escape(finding.title)}*"]
        lines += [f"• {escape(e)}" for e in finding.evidence[:MAX_EVIDENCE]]
        if len(finding.evidence) > MAX_EVIDENCE:
            lines.append(f"• … {len(finding.evidence) - MAX_EVIDENCE} more")
        lines += [f":bulb: {escape(a)}" for a in finding.advice]
        blocks.append(section("\n".join(lines)))
    if len(d.findings) > MAX_FINDINGS:
        blocks.append(context(f"{len(d.findings) - MAX_FINDINGS} more findings not shown"))
    if d.errors:
        shown = "\n".join(f"• {escape(clip(e, 200))}" for e in d.errors[:MAX_EVIDENCE])
        blocks.append(context(f":warning: Could not gather:\n{shown}"))
    if d.recommendations:
        blocks.append(divider())
        reasons = "\n".join(
            f"{n}. `{escape(r.label())}`: {escape(r.reason)}"
            for n, r in enumerate(d.recommendations, start=1)
        )
        blocks.append(section(f"*Recommended runbooks* (each asks for approval first)\n{reasons}"))
        if rec_ids:
            buttons = [
                button(
                    f"Run {r.label()}",
                    f"recommend_{n}",
                    str(rec_id),
                    style="primary" if n == 1 else None,
                )
                for n, (r, rec_id) in enumerate(zip(d.recommendations, rec_ids, strict=False), 1)
            ]
            blocks.append(actions(*buttons, block_id=f"diagnosis_{d.id or 0}"))
    return blocks
