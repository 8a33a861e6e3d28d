"""The approval request message: what will run, who asked, why, the approvals it needs, when
it expires, and Approve / Reject buttons while it is pending. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.blocks import Block, actions, button, clip, context, escape, header, section
from bot.durations import format_duration

if TYPE_CHECKING:
    from bot.approvals import Policy, Request

# Contract: approve buttons' action_id starts with "approve", reject with "reject".
APPROVE_ACTION = "approve_request"
REJECT_ACTION = "reject_request"

_STATUS = {
    "approved": ":white_check_mark: Approved by {by} — dry run: only the plan is posted",
    "running": ":hourglass_flowing_sand: Approved by {by} — running",
    "succeeded": ":white_check_mark: Succeeded (approved by {by})",
    "failed": ":x: Failed (approved by {by})",
    "rolled_back": ":leftwards_arrow_with_hook: Failed and rolled back (approved by {by})",
    "rejected": ":no_entry_sign: Rejected by {by} — nothing was run",
    "expired": ":hourglass: Expired without enough approvals — nothing was run",
    "interrupted": ":warning: Interrupted by a restart of the bot — check the host before"
    " running it again",
}


def mentions(users: Sequence[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users) or "nobody"


def params_text(params: dict[str, Any]) -> str:
    if not params:
        return "_defaults_"
    return " ".join(f"`{escape(str(k))}={escape(str(v))}`" for k, v in params.items())


def evidence_lines(evidence: Any, limit: int = 8) -> list[str]:
    """Evidence as bullet lines, whatever shape diagnosis stored it in."""
    if not evidence:
        return []
    if isinstance(evidence, str):
        items = [evidence]
    elif isinstance(evidence, dict):
        items = [f"{k}: {v}" for k, v in evidence.items()]
    elif isinstance(evidence, list | tuple):
        items = [
            (e.get("title") or e.get("evidence") or str(e)) if isinstance(e, dict) else str(e)
            for e in evidence
        ]
    else:
        items = [str(evidence)]
    return [f"• {escape(clip(' '.join(str(i).split()), 300))}" for i in items[:limit]]


def title(request: Request) -> str:
    if request.state == "pending":
        return f"Approval needed: {request.runbook} on {request.host}"
    word = request.state.replace("_", " ")
    return f"{request.runbook} on {request.host}: {word}"


def status_line(request: Request, approved_by: Sequence[str]) -> str:
    by = mentions(approved_by if request.state not in {"rejected"} else [request.decided_by or ""])
    line = _STATUS.get(request.state, request.state).format(by=by)
    if request.result and request.state in {"succeeded", "failed", "rolled_back"}:
        line += f"\n{escape(clip(request.result, 500))}"
    return line


def request_message(
    request: Request, policy: Policy, *, approved_by: Sequence[str] = (), note: str = ""
) -> tuple[str, list[Block]]:
    """``(text, blocks)`` of the request message in its current state."""
    who = f"*Requested by* <@{request.requested_by}> · `{request.id}`"
    blocks: list[Block] = [
        header(title(request)),
        section(f"{who}\n*Parameters* {params_text(request.params)}"),
    ]
    why = [f"*Why* {escape(request.reason)}"] if request.reason else []
    why += evidence_lines(request.evidence)
    if why:
        blocks.append(section("\n".join(why)))
    if request.plan:
        blocks.append(section("*Plan* (exactly what will run)\n```" + escape(request.plan) + "```"))
    if note:
        blocks.append(section(escape(note)))
    if request.state == "pending":
        need = f"Needs {policy.required} approval{'s' if policy.required > 1 else ''}"
        if approved_by:
            need += f" ({len(approved_by)} so far: {mentions(approved_by)})"
        rules = [
            f"{need} from {mentions(policy.approvers)}",
            "the requester may approve" if policy.allow_self else "not by the requester",
            f"expires {request.expires_at:%H:%M} UTC"
            f" ({format_duration((request.expires_at - request.created_at).total_seconds())}"
            " after the request)",
        ]
        blocks.append(context(" · ".join(rules)))
        blocks.append(
            actions(
                button("Approve", APPROVE_ACTION, request.id, style="primary"),
                button("Reject", REJECT_ACTION, request.id, style="danger"),
                block_id=f"request:{request.id}",
            )
        )
        text = f"{title(request)} ({request.id}), requested by <@{request.requested_by}>"
    else:
        line = status_line(request, approved_by)
        blocks.append(section(line))
        text = f"{title(request)} ({request.id}) — {line.splitlines()[0]}"
    return text, blocks
