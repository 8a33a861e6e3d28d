"""The one top-level Slack message of an incident, rebuilt from its row on every change."""

from __future__ import annotations

from typing import Any

from bot.blocks import Block, context, escape, section

_ICON = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}
_SOURCE = {"sns": "CloudWatch (SNS)", "alertmanager": "Alertmanager", "agent": "stabilize agent"}


def incident_label(incident_id: int | str) -> str:
    """How people refer to an incident: ``INC-12`` (the number is the database id)."""
    return f"INC-{incident_id}"


def _when(ts: str | None) -> str:
    # Stored as 2026-12-04T20:31:02.123456Z; seconds are precise enough for people.
    return ts[:19].replace("T", " ") + " UTC" if ts else "—"


def incident_text(incident: dict[str, Any]) -> str:
    """The notification text (also what screen readers and push notifications show)."""
    label = incident_label(incident["id"])
    what = f"{incident['alarm']} on {incident['host']}"
    if incident["state"] == "resolved":
        return f"Resolved: {label} {what} ({incident['count']} alerts)"
    return f"{label} {what}: firing, {incident['severity']}, {incident['count']} alerts"


def incident_blocks(incident: dict[str, Any]) -> list[Block]:
    """Header line, summary, then counts and times; says ``Resolved`` once it is."""
    label = incident_label(incident["id"])
    host, alarm = escape(incident["host"]), escape(incident["alarm"])
    resolved = incident["state"] == "resolved"
    if resolved:
        title = f":white_check_mark: *Resolved* · {label} · *{alarm}* on `{host}`"
    else:
        icon = _ICON.get(incident["severity"], ":red_circle:")
        title = f"{icon} *Firing* · {label} · *{alarm}* on `{host}` · {incident['severity']}"
    blocks = [section(title)]
    if incident.get("summary"):
        blocks.append(section(escape(incident["summary"])))
    times = [
        f"*{incident['count']}* alert{'s' if incident['count'] != 1 else ''}",
        f"first seen {_when(incident['first_seen'])}",
        f"last seen {_when(incident['last_seen'])}",
    ]
    if resolved:
        times.append(f"resolved {_when(incident.get('resolved_at'))}")
    times.append(f"via {_SOURCE.get(incident['source'], incident['source'])}")
    blocks.append(context(" · ".join(times)))
    return blocks


def incident_message(incident: dict[str, Any]) -> tuple[str, list[Block]]:
    return incident_text(incident), incident_blocks(incident)


def diagnosis_failed_text(host: str, reason: str) -> str:
    """The short note in the incident's thread when no diagnosis could be made."""
    return f"Automatic diagnosis of {host} did not run: {reason}"
