"""An incident's story for the postmortem, told from its audit rows.

``build_timeline`` collects every audit event of an incident — the rows that carry its id,
plus the rows of the requests raised for it (execution rows may carry only the request id) —
and turns them into entries: when, who, what, and how long each step took. ``to_markdown`` and
``to_table`` render it. Details written by other areas are read tolerantly: a missing key just
means a shorter line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.audit import AuditLog, VerifyResult, detail_of
from bot.db import parse_iso
from bot.durations import format_duration
from bot.errors import InputError

ALERT_ACTIONS = ("alert.received", "alert.deduplicated")
END_ACTIONS = (
    "execution.succeeded",
    "execution.failed",
    "execution.rolled_back",
    "execution.interrupted",
    "request.rejected",
    "request.expired",
)
_STEP_DURATION_KEYS = ("duration", "duration_s", "seconds", "elapsed", "elapsed_s")


@dataclass(frozen=True)
class Entry:
    ts: datetime
    actor: str
    action: str
    what: str
    request_id: str | None = None
    duration: float | None = None  # how long this step took, when it is a step


@dataclass
class Timeline:
    incident_id: str
    host: str | None
    entries: list[Entry] = field(default_factory=list)
    first_alert: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    outcome: str = "open"
    # request id -> "resize-instance type=t3.large: asked by U0ALICE, approved by U0BOB"
    decisions: dict[str, str] = field(default_factory=dict)

    @property
    def time_to_mitigation(self) -> float | None:
        if self.first_alert is None or self.mitigated_at is None:
            return None
        return (self.mitigated_at - self.first_alert).total_seconds()

    @property
    def actors(self) -> list[str]:
        seen: list[str] = []
        for e in self.entries:
            if e.actor not in seen:
                seen.append(e.actor)
        return seen


def recent_incident_ids(audit: AuditLog, limit: int = 5) -> list[str]:
    rows = audit.db.query(
        "SELECT incident_id, max(id) AS last FROM audit_events WHERE incident_id IS NOT NULL"
        " GROUP BY incident_id ORDER BY last DESC LIMIT ?",
        (limit,),
    )
    return [str(r["incident_id"]) for r in rows]


def incident_rows(audit: AuditLog, incident_id: str) -> list[dict[str, Any]]:
    """The incident's own rows plus every row of the requests raised for it, in order."""
    return audit.db.query(
        "SELECT * FROM audit_events WHERE incident_id = ?1 OR request_id IN"
        " (SELECT request_id FROM audit_events WHERE incident_id = ?1"
        "  AND request_id IS NOT NULL) ORDER BY id",
        (str(incident_id),),
    )


def build_timeline(audit: AuditLog, incident_id: str) -> Timeline:
    """The story of ``incident_id``; ``InputError`` naming the recent ids when it is unknown."""
    incident_id = str(incident_id).strip()
    # Slack shows incidents as INC-12; the audit log keeps the number.
    if incident_id.upper().startswith("INC-"):
        incident_id = incident_id[4:]
    rows = incident_rows(audit, incident_id)
    if not rows:
        recent = recent_incident_ids(audit)
        hint = f"recent incidents: {', '.join(recent)}" if recent else "no incidents recorded yet"
        raise InputError(f"no incident {incident_id!r} in the audit log ({hint})")
    timeline = Timeline(
        incident_id=str(incident_id), host=next((r["host"] for r in rows if r["host"]), None)
    )
    last_mark: dict[str, datetime] = {}  # request id -> when its previous step ended
    for row in rows:
        ts = parse_iso(row["ts"])
        action = row["action"]
        detail = detail_of(row)
        duration = None
        request_id = row["request_id"]
        if action in ALERT_ACTIONS and timeline.first_alert is None:
            timeline.first_alert = ts
        if action == "incident.opened" and timeline.first_alert is None:
            timeline.first_alert = ts
        if action in ("execution.started", "execution.step") and request_id:
            if action == "execution.step":
                duration = _explicit_duration(detail)
                if duration is None and request_id in last_mark:
                    duration = (ts - last_mark[request_id]).total_seconds()
            last_mark[request_id] = ts
        if action in END_ACTIONS:
            timeline.outcome = _outcome(action, row)
            if action.startswith("execution."):
                duration = _explicit_duration(detail)  # the whole run
            if action == "execution.succeeded" and timeline.mitigated_at is None:
                timeline.mitigated_at = ts
        if action == "incident.resolved":
            timeline.resolved_at = ts
            if timeline.outcome == "open":
                timeline.outcome = "resolved"
        if request_id and action in _DECISION_VERBS:
            _note_decision(timeline, row, detail)
        timeline.entries.append(
            Entry(ts, row["actor"], action, describe(row, detail), request_id, duration)
        )
    return timeline


_DECISION_VERBS = {
    "request.created": "asked by {actor}",
    "request.approved": "approved by {actor}",
    "request.rejected": "rejected by {actor}",
    "request.denied": "{actor} not allowed to approve",
    "request.expired": "expired",
}


def _note_decision(t: Timeline, row: dict[str, Any], detail: dict[str, Any]) -> None:
    part = _DECISION_VERBS[row["action"]].format(actor=row["actor"])
    key = row["request_id"]
    if row["action"] == "request.created" or key not in t.decisions:
        head = f"{row['runbook'] or '?'}{_params(detail)} ({key})"
        t.decisions.setdefault(key, head)
    t.decisions[key] += (": " if ": " not in t.decisions[key] else ", ") + part


def _explicit_duration(detail: dict[str, Any]) -> float | None:
    for key in _STEP_DURATION_KEYS:
        value = detail.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _outcome(action: str, row: dict[str, Any]) -> str:
    what = row["runbook"] or "request"
    return {
        "execution.succeeded": f"{what} succeeded",
        "execution.failed": f"{what} failed",
        "execution.rolled_back": f"{what} failed and was rolled back",
        "execution.interrupted": f"{what} was interrupted",
        "request.rejected": f"{what} was rejected",
        "request.expired": f"{what} request expired",
    }[action]


def _first(detail: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = detail.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def _params(detail: dict[str, Any]) -> str:
    params = detail.get("params")
    if isinstance(params, dict) and params:
        return " " + " ".join(f"{k}={v}" for k, v in params.items())
    return ""


def _findings(detail: dict[str, Any]) -> str:
    findings = detail.get("findings")
    if not isinstance(findings, list) or not findings:
        count = detail.get("findings_count") or detail.get("n_findings")
        return f"{count} findings" if count else "diagnosis posted"
    titles = []
    for f in findings:
        if isinstance(f, dict):
            sev = f.get("severity")
            title = f.get("title") or f.get("evidence") or "?"
            titles.append(f"[{sev}] {title}" if sev else str(title))
        else:
            titles.append(str(f))
    return "; ".join(titles)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def describe(row: dict[str, Any], detail: dict[str, Any] | None = None) -> str:
    """One line saying what happened in this row, for people."""
    d = detail if detail is not None else detail_of(row)
    action = row["action"]
    runbook = row["runbook"] or _first(d, "runbook") or ""
    req = f" ({row['request_id']})" if row["request_id"] else ""
    if action in ALERT_ACTIONS:
        name = _first(d, "alertname", "alarm", "alarm_name", "name", "kind", "title")
        summary = _first(d, "summary", "reason", "description")
        source = _first(d, "source")
        status = _first(d, "status")
        text = "alert" + (f" {name}" if name else "") + (f" from {source}" if source else "")
        text += f" ({status})" if status and status != "firing" else ""
        if action == "alert.deduplicated":
            text = "repeat " + text
        return text + (f": {summary}" if summary else "")
    if action == "incident.opened":
        title = _first(d, "title", "summary", "alarm", "alertname")
        return "incident opened" + (f": {title}" if title else "")
    if action == "incident.resolved":
        return "incident resolved" + (f" ({d['reason']})" if d.get("reason") else "")
    if action == "diagnosis.posted":
        return _findings(d)
    if action == "request.created":
        reason = _first(d, "reason")
        return f"asked for {runbook}{_params(d)}{req}" + (f": {reason}" if reason else "")
    if action == "request.approved":
        return f"approved {runbook}{req}"
    if action == "request.rejected":
        return f"rejected {runbook}{req}"
    if action == "request.denied":
        why = _first(d, "reason", "why")
        return f"not allowed to approve {runbook}{req}" + (f": {why}" if why else "")
    if action == "request.expired":
        return f"{runbook} request expired{req}"
    if action == "execution.started":
        return f"{runbook} started{_params(d)}"
    if action == "execution.step":
        n = next((d[k] for k in ("n", "step", "index") if isinstance(d.get(k), int)), None)
        name = _first(d, "name", "title", "description")
        if name is None and isinstance(d.get("step"), str):
            name = d["step"]
        status = _first(d, "status", "result", "state")
        if status is None and isinstance(d.get("ok"), bool):
            status = "ok" if d["ok"] else "failed"
        output = d.get("output")
        text = f"step {n}" if n is not None else "step"
        text += f": {name}" if name else ""
        text += f" — {status}" if status else ""
        if isinstance(output, str) and output.strip():
            text += f" ({_clip(output.strip(), 80)})"
        return text
    if action == "execution.succeeded":
        return f"{runbook} succeeded" + (f": {d['summary']}" if d.get("summary") else "")
    if action in ("execution.failed", "execution.rolled_back", "execution.interrupted"):
        err = _first(d, "error", "reason", "summary")
        verb = action.split(".", 1)[1].replace("_", " ")
        return f"{runbook} {verb}" + (f": {err}" if err else "")
    reason = _first(d, "reason", "error")
    return action + (f": {reason}" if reason else "")


# -- rendering ------------------------------------------------------------------------------


def _clock(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _offset(t: Timeline, ts: datetime) -> str:
    if t.first_alert is None:
        return ""
    seconds = (ts - t.first_alert).total_seconds()
    return ("+" if seconds >= 0 else "-") + format_duration(abs(seconds))


def summary_lines(t: Timeline) -> list[tuple[str, str]]:
    ttm = t.time_to_mitigation
    return [
        ("Host", t.host or "?"),
        ("First alert", _clock(t.first_alert) if t.first_alert else "none recorded"),
        ("Mitigated", _clock(t.mitigated_at) if t.mitigated_at else "not yet"),
        ("Time to mitigation", format_duration(ttm) if ttm is not None else "n/a"),
        ("Resolved", _clock(t.resolved_at) if t.resolved_at else "not yet"),
        ("Outcome", t.outcome),
        ("People and systems involved", ", ".join(t.actors)),
        *(("Request", text) for text in t.decisions.values()),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(t: Timeline, checked: VerifyResult | None = None) -> str:
    """The postmortem's Markdown. With ``checked`` (the whole log verified just before) it
    ends with the log's anchor: the document, kept outside the database, then vouches for
    the history it was written from (``stabilize audit verify --anchor``)."""
    out = [f"# Incident {t.incident_id} on {t.host or '?'}", ""]
    for label, value in summary_lines(t):
        out.append(f"- **{label}:** {_md_cell(value)}")
    out += [
        "",
        "| time (UTC) | since alert | who | event | what | took |",
        "|---|---|---|---|---|---|",
    ]
    for e in t.entries:
        took = format_duration(e.duration) if e.duration is not None else ""
        out.append(
            f"| {_clock(e.ts)} | {_offset(t, e.ts)} | {_md_cell(e.actor)} | {e.action}"
            f" | {_md_cell(e.what)} | {took} |"
        )
    out.append("")
    if checked is not None and checked.ok and checked.anchor:
        out += [
            f"Audit log verified when this was written: {checked.checked} events intact,"
            f" anchor `{checked.anchor}`. To show later that the history up to here is"
            f" unchanged: `stabilize audit verify --anchor {checked.anchor}`.",
            "",
        ]
    elif checked is not None and not checked.ok:
        out += [f"**The audit log did not verify when this was written:** {checked}.", ""]
    return "\n".join(out)


def to_table(t: Timeline) -> Any:
    """A rich renderable: the summary, then one row per event."""
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in summary_lines(t):
        head.add_row(label, value)
    table = Table(title=f"Incident {t.incident_id} on {t.host or '?'}", title_justify="left")
    table.add_column("UTC", no_wrap=True)
    table.add_column("since alert", no_wrap=True, justify="right")
    table.add_column("who", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("what", min_width=30, ratio=1, overflow="fold")
    table.add_column("took", justify="right", no_wrap=True)
    for e in t.entries:
        style = "red" if e.action in END_ACTIONS[1:] else None
        if e.action == "execution.succeeded":
            style = "green"
        took = format_duration(e.duration) if e.duration is not None else ""
        when = e.ts.strftime("%H:%M:%S")  # the date is in the summary
        table.add_row(when, _offset(t, e.ts), e.actor, e.action, e.what, took, style=style)
    return Group(table, head)
