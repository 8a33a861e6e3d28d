"""Where messages go: Slack's Web API, or the terminal for ``stabilize shell`` and the demo.

The outbox (bot/outbox.py) delivers through a ``Transport``; so does everything that answers a
user directly. Keeping this one small interface lets the same bot code run with or without
Slack.
"""

from __future__ import annotations

from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Secrets
from bot.errors import ConfigError


class TransportRetry(Exception):
    """Delivery failed for now; retry after ``after`` seconds (429 Retry-After, 5xx, network)."""

    def __init__(self, message: str, after: float) -> None:
        super().__init__(message)
        self.after = after


class TransportError(Exception):
    """Delivery failed for good (e.g. channel_not_found, invalid_auth): retrying will not help."""


class Transport(Protocol):
    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Post a message; return its ``ts``."""
        ...

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None: ...

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None: ...


# Errors that will not go away by retrying the same call.
_PERMANENT = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_blocks_format",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "user_not_in_channel",
    "missing_scope",
    "invalid_arguments",
}


def _retry_after(headers: Any) -> float:
    """Slack sends whole seconds; anything unreadable (or absent) means one second."""
    value = headers.get("Retry-After", headers.get("retry-after")) if headers else None
    try:
        return min(max(float(value), 0.0), 3600.0) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def make_web_client(secrets: Secrets) -> AsyncWebClient:
    """slack_sdk's client pointed at ``SLACK_API_URL``. 429s are *not* retried here: the
    outbox owns that (it persists and reschedules), so a long rate limit never blocks a task."""
    if not secrets.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set (export the bot token, xoxb-…)")
    return AsyncWebClient(
        token=secrets.slack_bot_token,
        base_url=secrets.slack_api_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncServerErrorRetryHandler(max_retry_count=1),
        ],
    )


class SlackTransport:
    """Delivery through the Slack Web API; maps Slack's answers to retry / give up."""

    def __init__(self, client: AsyncWebClient, *, on_error: Any = None) -> None:
        self.client = client
        self._on_error = on_error  # callback(method, error) for metrics

    async def _call(self, method: str, *, _query: bool = False, **kwargs: Any) -> dict[str, Any]:
        try:
            if _query:  # read methods take form/query arguments, not JSON
                resp = await self.client.api_call(method, params=kwargs)
            else:
                resp = await self.client.api_call(method, json=kwargs)
        except SlackApiError as exc:
            resp_obj = exc.response
            status = resp_obj.status_code
            error = resp_obj.get("error") if hasattr(resp_obj, "get") else None
            if self._on_error:
                self._on_error(method, error or str(status))
            if status == 429:
                raise TransportRetry(
                    f"{method}: rate limited", _retry_after(resp_obj.headers)
                ) from None
            if status >= 500:
                raise TransportRetry(f"{method}: Slack answered {status}", 2.0) from None
            if error in _PERMANENT:
                raise TransportError(f"{method}: {error}") from None
            if error in {"ratelimited", "rate_limited"}:
                raise TransportRetry(f"{method}: {error}", 1.0) from None
            if error in {"fatal_error", "internal_error", "service_unavailable", "request_timeout"}:
                raise TransportRetry(f"{method}: {error}", 2.0) from None
            raise TransportError(f"{method}: {error or status}") from None
        except (TimeoutError, OSError) as exc:
            if self._on_error:
                self._on_error(method, type(exc).__name__)
            raise TransportRetry(f"{method}: {type(exc).__name__}: {exc}", 2.0) from None
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        args: dict[str, Any] = {"channel": channel, "text": text}
        if blocks:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        if metadata:
            args["metadata"] = metadata
        data = await self._call("chat.postMessage", **args)
        return str(data.get("ts"))

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        # An empty list removes the blocks (e.g. the buttons), None keeps Slack's default.
        if blocks is not None:
            args["blocks"] = blocks
        await self._call("chat.update", **args)

    async def find_posted(
        self, channel: str, key: str, *, thread_ts: str | None = None
    ) -> str | None:
        """The ``ts`` of a message we posted under ``key`` (its ``metadata``), if Slack has one.

        Used by the outbox after an attempt whose answer was lost, so that it never posts twice.
        Looks at the newest 200 messages (the lost one is recent: we post ≤ 1/s per channel).
        Needs the ``channels:history`` (or ``groups:history``) scope."""
        args: dict[str, Any] = {"channel": channel, "limit": 200, "include_all_metadata": "true"}
        if thread_ts:
            data = await self._call("conversations.replies", _query=True, ts=thread_ts, **args)
        else:
            data = await self._call("conversations.history", _query=True, **args)
        for message in data.get("messages") or []:
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == "stabilize_message" and payload.get("key") == key:
                return str(message.get("ts"))
        return None

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks:
            args["blocks"] = blocks
        await self._call("chat.postEphemeral", **args)
