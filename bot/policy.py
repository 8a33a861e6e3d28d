"""The approval policy: who may approve a runbook, how many distinct approvers it needs,
whether the requester may approve, and when a request expires. Read from the config on every
click, so a changed config applies to pending requests too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.config import Settings


@dataclass(frozen=True)
class Policy:
    """The effective approval policy of one runbook (global settings + its overrides)."""

    runbook: str
    approvers: tuple[str, ...]
    required: int
    allow_self: bool
    expires_after: float
    source: str  # the config key to name in messages

    def refusal(self, user: str, requester: str) -> str | None:
        """Why ``user`` may not approve a request by ``requester``; None when they may."""
        if user not in self.approvers:
            who = ", ".join(f"<@{a}>" for a in self.approvers) or "nobody"
            return (
                f"you are not an approver for {self.runbook} (approvers: {who};"
                f" set in {self.source}.approvers)"
            )
        if user == requester and not self.allow_self:
            return (
                f"you asked for this run and may not approve it yourself"
                f" ({self.source}.allow_self is false); ask another approver"
            )
        return None

    def eligible(self, requester: str) -> list[str]:
        return [a for a in self.approvers if self.allow_self or a != requester]

    def counts(self, user: str, requester: str) -> bool:
        return self.refusal(user, requester) is None


def policy_for(settings: Settings, runbook: str) -> Policy:
    """Global ``approvals`` with ``approvals.runbooks.<runbook>`` overrides applied."""
    base = settings.approvals
    over = base.runbooks.get(runbook)
    source = f"approvals.runbooks.{runbook}" if over is not None else "approvals"

    def pick(name: str) -> Any:
        value = getattr(over, name, None) if over is not None else None
        return getattr(base, name) if value is None else value

    return Policy(
        runbook=runbook,
        approvers=tuple(dict.fromkeys(pick("approvers"))),
        required=int(pick("required")),
        allow_self=bool(pick("allow_self")),
        expires_after=float(pick("expires_after")),
        source=source,
    )
