"""The normalized alert every intake source produces, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SOURCES = ("sns", "alertmanager", "agent")
SEVERITIES = ("critical", "warning", "info")
Status = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Alert:
    """One alert: ``(host, name)`` is the incident key; ``source`` is also the audit actor."""

    source: str  # "sns" | "alertmanager" | "agent"
    host: str  # validated against bot.config.HOST_NAME_RE by the intake module
    name: str  # CloudWatch AlarmName, Alertmanager alertname, agent kind
    status: Status = "firing"
    severity: str = "warning"  # one of SEVERITIES
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None  # SNS MessageId, Alertmanager fingerprint, …

    @property
    def firing(self) -> bool:
        return self.status == "firing"


def normalize_severity(value: Any, default: str = "warning") -> str:
    """Map the many spellings senders use onto ours (``page`` → critical, ``none`` → info)."""
    text = str(value or "").strip().lower()
    if text in SEVERITIES:
        return text
    if text in {"page", "error", "high", "fatal", "emergency", "alert", "crit", "p1", "sev1"}:
        return "critical"
    if text in {"warn", "medium", "p2", "p3", "sev2", "sev3"}:
        return "warning"
    if text in {"none", "low", "notice", "debug", "p4", "p5", "informational"}:
        return "info"
    return default


def clip(text: Any, limit: int = 500) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= limit else value[: limit - 1] + "…"
