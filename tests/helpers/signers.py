"""Sign requests the way their real senders do: Slack (v0) and the stabilize agent (v1).

Bodies are built in the senders' real shapes so a test exercises the same parsing the bot
does in production: a slash command is a form body, a button click is a form body with one
``payload`` field holding JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

DEFAULT_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 - Slack's doc example shape
DEFAULT_WEBHOOK_TOKEN = "stabilize-test-webhook-token-7c1e"  # noqa: S105 - fake

FORM = "application/x-www-form-urlencoded"
_trigger_ids = itertools.count(1)


def _bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def _timestamp(timestamp: int | float | None, age: float) -> str:
    return str(int(timestamp if timestamp is not None else time.time() - age))


class SlackSigner:
    """Signs bodies with a Slack signing secret and builds Slack's request bodies.

    ``age`` is how old the request claims to be: ``age=600`` is stale, ``age=-600`` comes from
    the future; both are outside Slack's 5-minute window.
    """

    def __init__(
        self,
        secret: str = DEFAULT_SIGNING_SECRET,
        *,
        response_url: Callable[[], str] | None = None,
        team_id: str = "T0TEAM",
        team_domain: str = "stabilize-test",
        api_app_id: str = "A0STABILIZE",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
    ) -> None:
        self.secret = secret
        self._response_url = response_url
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id

    def signature(self, body: str | bytes, timestamp: str) -> str:
        base = b"v0:" + timestamp.encode() + b":" + _bytes(body)
        return "v0=" + hmac.new(self.secret.encode(), base, hashlib.sha256).hexdigest()

    def headers(
        self,
        body: str | bytes,
        *,
        timestamp: int | float | None = None,
        age: float = 0,
        content_type: str = FORM,
    ) -> dict[str, str]:
        """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` (plus ``Content-Type``)."""
        ts = _timestamp(timestamp, age)
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": self.signature(body, ts),
        }

    def sign(self, body: str | bytes, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
        """``(body, headers)`` ready to POST to ``/slack/events``."""
        return _bytes(body), self.headers(body, **kwargs)

    def new_response_url(self) -> str:
        if self._response_url is None:
            raise ValueError("pass response_url=… (a loopback URL); this signer has no stand-in")
        return self._response_url()

    # -- bodies in Slack's shapes --------------------------------------------------------

    def slash_command(
        self,
        text: str = "",
        *,
        command: str = "/stabilize",
        user_id: str = "U0ALICE",
        user_name: str | None = None,
        channel_id: str = "C0ALERTS",
        channel_name: str = "alerts",
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> str:
        """The form body Slack POSTs for ``/stabilize <text>``."""
        fields = {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",  # deprecated verification token; never trusted
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower().removeprefix("u0"),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self.new_response_url(),
            "trigger_id": trigger_id or self._trigger_id(),
        }
        return urlencode(fields)

    def block_actions_payload(
        self,
        action_id: str,
        value: str,
        *,
        user_id: str = "U0ALICE",
        user_name: str | None = None,
        channel_id: str = "C0ALERTS",
        channel_name: str = "alerts",
        message_ts: str = "1733340000.000100",
        thread_ts: str | None = None,
        message: dict[str, Any] | None = None,
        block_id: str = "actions",
        text: str | None = None,
        style: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when someone clicks a button.

        ``message`` is the message the button sits in (e.g. ``slack_api.messages()[0]``);
        without it a minimal bot message with ``message_ts`` is used.
        """
        name = user_name or user_id.lower().removeprefix("u0")
        if message is None:
            message = {
                "type": "message",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.api_app_id,
                "text": "stabilize",
                "ts": message_ts,
                "team": self.team_id,
                "blocks": [],
            }
            if thread_ts:
                message["thread_ts"] = thread_ts
        message_ts = message.get("ts", message_ts)
        button_text = text or action_id.split("_", 1)[0].capitalize()
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id,
            "text": {"type": "plain_text", "text": button_text, "emoji": True},
            "value": value,
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if style:
            action["style"] = style
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": name, "name": name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "container": container,
            "trigger_id": trigger_id or self._trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": channel_name},
            "message": message,
            "state": {"values": {}},
            "response_url": response_url or self.new_response_url(),
            "actions": [action],
        }

    def block_actions(self, action_id: str, value: str, **kwargs: Any) -> str:
        """The form body (``payload=<json>``) Slack POSTs for a button click."""
        return self.payload_body(self.block_actions_payload(action_id, value, **kwargs))

    @staticmethod
    def payload_body(payload: dict[str, Any]) -> str:
        """Any interactivity payload as Slack sends it: a form with one ``payload`` field."""
        return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})

    def _trigger_id(self) -> str:
        return f"{next(_trigger_ids)}.{self.team_id[1:]}.{int(time.time() * 1000):x}"


class AgentSigner:
    """Signs ``/alerts/agent`` bodies like ``stabilize agent`` does.

    ``X-Stabilize-Signature: sha256=<hex HMAC-SHA256 of "v1:<timestamp>:<body>">`` keyed by
    ``STABILIZE_WEBHOOK_TOKEN``.
    """

    def __init__(self, token: str = DEFAULT_WEBHOOK_TOKEN) -> None:
        self.token = token

    def signature(self, body: str | bytes, timestamp: str) -> str:
        base = b"v1:" + timestamp.encode() + b":" + _bytes(body)
        return "sha256=" + hmac.new(self.token.encode(), base, hashlib.sha256).hexdigest()

    def headers(
        self, body: str | bytes, *, timestamp: int | float | None = None, age: float = 0
    ) -> dict[str, str]:
        ts = _timestamp(timestamp, age)
        return {
            "Content-Type": "application/json",
            "X-Stabilize-Timestamp": ts,
            "X-Stabilize-Signature": self.signature(body, ts),
        }

    def sign(
        self, body: dict[str, Any] | str | bytes, **kwargs: Any
    ) -> tuple[bytes, dict[str, str]]:
        """``(body, headers)``; a dict is serialized to JSON first."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else _bytes(body)
        return raw, self.headers(raw, **kwargs)

    @staticmethod
    def alert(
        host: str = "prod-web-01",
        kind: str = "oom_kill",
        severity: str = "critical",
        summary: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        resolved: bool | None = None,
    ) -> dict[str, Any]:
        """An agent alert body: ``{"host", "kind", "severity", "summary", "details"}``."""
        body: dict[str, Any] = {
            "host": host,
            "kind": kind,
            "severity": severity,
            "summary": summary or f"{kind} on {host}",
            "details": details or {},
        }
        if resolved is not None:
            body["resolved"] = resolved
        return body
