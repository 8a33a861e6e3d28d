"""``POST /alerts/alertmanager``: Prometheus Alertmanager's webhook (version 4).

Authenticated by ``Authorization: Bearer $STABILIZE_WEBHOOK_TOKEN`` (constant-time compare).
One call carries a group: each entry of ``alerts[]`` has its own ``status`` and is applied on
its own, all in one transaction (the whole call is refused if one entry is malformed). The host
is the ``instance`` label without its port, else ``host``, else ``nodename``; the alarm is the
``alertname`` label.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from aiohttp import web

from bot.config import HOST_NAME_RE
from bot.errors import AuthError, InputError
from bot.intake.common import handle_with, parse_json
from bot.intake.model import Alert, clip, normalize_severity
from bot.services import Services

SOURCE = "alertmanager"
MAX_ALERTS = 1000
_PORT_RE = re.compile(r":\d{1,5}$")


async def handle(request: web.Request) -> web.Response:
    return await handle_with(request, SOURCE, parse)


def check_token(services: Services, header: str | None) -> None:
    expected = services.secrets.webhook_token
    if not expected:
        raise AuthError(
            "the bot has no STABILIZE_WEBHOOK_TOKEN set; set it and give Alertmanager the same"
            " token (http_config.authorization.credentials)"
        )
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthError("wrong bearer token (compare with STABILIZE_WEBHOOK_TOKEN)")


async def parse(services: Services, request: web.Request, body: bytes) -> list[Alert]:
    check_token(services, request.headers.get("Authorization"))
    return parse_payload(parse_json(body))


def parse_payload(payload: Any) -> list[Alert]:
    """Alertmanager's webhook JSON → alerts, in the order they were sent."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise InputError("not an Alertmanager webhook: expected an object with an 'alerts' list")
    version = str(payload.get("version", "4"))
    if version != "4":
        raise InputError(f"unsupported Alertmanager webhook version {version!r} (expected '4')")
    entries = payload["alerts"]
    if len(entries) > MAX_ALERTS:
        raise InputError(f"too many alerts in one call ({len(entries)} > {MAX_ALERTS})")
    common: dict[str, Any] = (
        payload["commonLabels"] if isinstance(payload.get("commonLabels"), dict) else {}
    )
    return [_alert(i, entry, common, payload) for i, entry in enumerate(entries)]


def _alert(i: int, entry: Any, common: dict[str, Any], payload: dict[str, Any]) -> Alert:
    if not isinstance(entry, dict) or not isinstance(entry.get("labels"), dict):
        raise InputError(f"alerts[{i}] is not an alert object with 'labels'")
    labels = {**common, **entry["labels"]}
    status = entry.get("status") or payload.get("status")
    if status not in ("firing", "resolved"):
        raise InputError(f"alerts[{i}].status must be 'firing' or 'resolved', got {status!r}")
    name = labels.get("alertname")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"alerts[{i}] has no 'alertname' label")
    host = host_from_labels(labels)
    if host is None:
        raise InputError(
            f"alerts[{i}] ({name}) names no host: add an 'instance', 'host' or 'nodename' label"
        )
    annotations: dict[str, Any] = (
        entry["annotations"] if isinstance(entry.get("annotations"), dict) else {}
    )
    summary = annotations.get("summary") or annotations.get("description") or name
    details = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": entry.get("startsAt"),
        "endsAt": entry.get("endsAt"),
        "generatorURL": entry.get("generatorURL"),
    }
    fingerprint = entry.get("fingerprint")
    return Alert(
        source=SOURCE,
        host=host,
        name=clip(name, 200),
        status=status,
        severity=normalize_severity(labels.get("severity")),
        summary=clip(summary),
        details=details,
        external_id=str(fingerprint) if fingerprint else None,
    )


def host_from_labels(labels: dict[str, Any]) -> str | None:
    """``instance`` (port stripped), else ``host``, else ``nodename``; None if none is valid."""
    for label in ("instance", "host", "nodename"):
        value = labels.get(label)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if label == "instance":
            value = _strip_port(value)
        if HOST_NAME_RE.match(value):
            return value
    return None


def _strip_port(instance: str) -> str:
    if instance.startswith("["):  # [::1]:9100
        return instance[1:].split("]", 1)[0]
    if instance.count(":") == 1:
        return _PORT_RE.sub("", instance)
    return instance
