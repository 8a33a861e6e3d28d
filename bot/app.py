"""The Slack surface: the Bolt ``AsyncApp``, its listeners, and the aiohttp handler of
``POST /slack/events`` (plus Socket Mode for ``stabilize serve --socket-mode``).

The handler checks Slack's signature itself before Bolt sees the request, so that every
refusal is a one-line 401 *and* an ``auth.rejected`` audit row; malformed bodies are a
one-line 400 and ``input.rejected``. Then Bolt acks within Slack's 3 s with a short reply
and the work continues after the ack (``Reply.followup`` in a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot import approvals, runs
from bot.errors import ConfigError
from bot.services import Services
from commands.actions import handle_action
from commands.reply import Blocks, Reply, Responder
from commands.slash import handle_command

log = logging.getLogger("stabilize.slack")

SIGNATURE_WINDOW = 300  # seconds; Slack's own rule
ROUTE = "/slack/events"
_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,31}\Z")


class _QuietClientWarning(logging.Filter):
    """Bolt warns that the token is unused when a client is given; that is on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def create_app(
    services: Services,
    *,
    client: AsyncWebClient | None = None,
    signing_secret: str | None = None,
    gate: AckGate | None = None,
    verify: bool = True,
) -> AsyncApp:
    """A Bolt AsyncApp wired to ``services`` (no side effects until it handles a request).

    ``verify=False`` only for ``make_handler``, which checks every signature before Bolt.
    """
    secrets = services.secrets
    if client is None:
        if not secrets.slack_bot_token:
            raise ConfigError("SLACK_BOT_TOKEN is not set (export the bot token, xoxb-…)")
        client = AsyncWebClient(
            token=secrets.slack_bot_token, base_url=secrets.slack_api_url, timeout=10
        )
    secret = signing_secret or secrets.slack_signing_secret
    if not secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set (copy it from your Slack app's Basic Information page)"
        )
    if not any(isinstance(f, _QuietClientWarning) for f in log.filters):
        log.addFilter(_QuietClientWarning())
    app = AsyncApp(
        client=client,
        signing_secret=secret,
        process_before_response=False,
        request_verification_enabled=verify,
        logger=log,
        name="stabilize",
    )
    register_listeners(app, services, gate)
    return app


class AckGate:
    """Acks first: work after an ack waits while other requests are being acknowledged
    (at most ``max_wait``), so a burst of clicks is acknowledged before any of them is
    processed. Idle bots never wait."""

    def __init__(self, max_wait: float = 1.0, settle: float = 0.02) -> None:
        self.max_wait = max_wait
        self.settle = settle
        self.inflight = 0
        self._last_busy = 0.0
        self._quiet: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    def _event(self) -> asyncio.Event:
        if self._quiet is None:  # created in the serving loop, on first use
            self._quiet = asyncio.Event()
            self._quiet.set()
        return self._quiet

    def enter(self) -> None:
        self.inflight += 1
        self._event().clear()

    def leave(self) -> None:
        self._last_busy = time.monotonic()
        self.inflight = max(0, self.inflight - 1)
        if self.inflight == 0:
            self._event().set()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One at a time, in arrival order (asyncio.Lock is FIFO), after the burst — but
        never more than ``max_wait`` after this turn was asked for, however busy it gets."""
        deadline = time.monotonic() + self.max_wait
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self.quiet(deadline)
            yield

    async def quiet(self, deadline: float | None = None) -> None:
        """Return once no ack has been in flight for ``settle`` seconds (or at ``deadline``,
        by default ``max_wait`` from now)."""
        deadline = deadline if deadline is not None else time.monotonic() + self.max_wait
        while self.inflight or self._last_busy > time.monotonic() - self.settle:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.inflight:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event().wait(), left)
            else:
                await asyncio.sleep(min(left, self.settle))


def register_listeners(app: AsyncApp, services: Services, gate: AckGate | None = None) -> None:
    """The slash command and every button, each delegating to the transport-agnostic cores.
    Whatever changes state runs after the ack, once per Slack delivery (``trigger_id``)."""

    @app.command(re.compile(r"^/"))
    async def on_command(
        ack: Any, body: dict[str, Any], command: dict[str, Any], respond: Any
    ) -> None:
        user = str(command.get("user_id", ""))
        channel = str(command.get("channel_id", ""))
        try:
            reply = handle_command(
                services, user=user, channel=channel, text=str(command.get("text", ""))
            )
        except Exception:
            log.exception("slash command failed")
            reply = Reply(text="Something went wrong; the server log has the details.")
        await ack(text=reply.text, blocks=reply.blocks, response_type="ephemeral")
        followup = reply.followup
        if followup is not None:
            send = _responder(services, respond, channel, user)

            def prepare() -> Reply:
                return reply

            async def then(_: Reply) -> None:
                await followup(send)

            runs.spawn(_after_ack(services, gate, body, prepare, then))

    @app.action(re.compile(r".+"))
    async def on_action(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        channel = str(
            (body.get("channel") or {}).get("id")
            or (body.get("container") or {}).get("channel_id")
            or ""
        )

        def prepare() -> Reply:
            try:
                return handle_action(
                    services,
                    user=user,
                    channel=channel,
                    action_id=str(action.get("action_id", "")),
                    value=str(action.get("value", "")),
                )
            except Exception:
                log.exception("button click failed")
                return Reply(text="Something went wrong; the server log has the details.")

        async def then(reply: Reply) -> None:
            send = _responder(services, respond, channel, user)
            if reply.update is not None:  # the buttons go away at once; the message says why
                await send(*reply.update, replace_original=True)
            if reply.text and not (reply.update is not None and reply.update_says_it_all):
                await send(reply.text, reply.blocks)
            if reply.followup is not None:
                await reply.followup(send)

        runs.spawn(_after_ack(services, gate, body, prepare, then))


async def _after_ack(
    services: Services,
    gate: AckGate | None,
    body: dict[str, Any],
    prepare: Callable[[], Reply],
    then: Callable[[Reply], Awaitable[None]],
) -> None:
    """After the ack: once the burst is acknowledged, decide (``prepare``, in arrival order)
    unless Slack already delivered this very request (a retry: same ``trigger_id``), then
    tell the user and carry on (``then``)."""
    trigger = body.get("trigger_id")
    if gate is not None:
        deadline = time.monotonic() + gate.max_wait
        async with gate.turn():
            if trigger and approvals.seen_delivery(services, f"trigger:{trigger}"):
                return
            reply = prepare()
        await gate.quiet(deadline)  # replies, too, wait for the acks of a burst
    else:
        if trigger and approvals.seen_delivery(services, f"trigger:{trigger}"):
            return
        reply = prepare()
    await then(reply)


def _responder(services: Services, respond: Any, channel: str, user: str) -> Responder:
    """Bolt's ``respond`` (the response_url) with a chat.postEphemeral fallback."""

    async def send(
        text: str, blocks: Blocks | None = None, *, replace_original: bool = False
    ) -> None:
        try:
            if replace_original:
                await respond(text=text, blocks=blocks, replace_original=True)
            else:
                await respond(
                    text=text, blocks=blocks, response_type="ephemeral", replace_original=False
                )
            return
        except Exception as exc:
            services.metrics.slack_errors.labels("response_url", type(exc).__name__).inc()
            log.warning("response_url failed: %s", exc)
        if replace_original or services.transport is None or not channel or not user:
            return  # the outbox updates the message itself
        try:
            await services.transport.ephemeral(channel, user, text, blocks)
        except Exception as exc:
            log.warning("chat.postEphemeral failed: %s", exc)

    return send


# -- the aiohttp handler ----------------------------------------------------------------------


def _refuse(
    services: Services, request: web.Request, status: int, action: str, reason: str
) -> web.Response:
    services.audit.append(
        "system",
        action,
        detail={"route": ROUTE, "reason": reason, "remote": request.remote or ""},
    )
    return web.Response(status=status, text=reason + "\n", content_type="text/plain")


def _check_signature(secret: str, body: str, headers: Any) -> str | None:
    """Why the request is not Slack's (None when it is)."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if not timestamp or not signature:
        return "missing Slack signature headers (X-Slack-Request-Timestamp, X-Slack-Signature)"
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return "malformed X-Slack-Request-Timestamp"
    if age > SIGNATURE_WINDOW:
        return "stale request: timestamp is more than 5 minutes off (check the server clock)"
    if not SignatureVerifier(secret).is_valid(body, timestamp, signature):
        return "invalid Slack signature (check SLACK_SIGNING_SECRET)"
    return None


def parse(body: str, content_type: str, headers: Any, query: str) -> AsyncBoltRequest:
    """Bolt's request (Bolt parses the body once, for us too), refusing what is not Slack's.

    Raises ValueError with a one-line reason.
    """
    form = content_type in ("application/x-www-form-urlencoded", "")
    if content_type != "application/json" and not form:
        raise ValueError(f"unsupported content type {content_type!r}")
    try:
        request = AsyncBoltRequest(body=body, query=query, headers=headers)
    except json.JSONDecodeError:
        raise ValueError("malformed payload JSON" if form else "malformed JSON body") from None
    except (AttributeError, TypeError, KeyError, IndexError):
        raise ValueError("payload JSON is not a Slack interaction") from None
    kind_of(request.body)
    return request


def classify(body: str, content_type: str) -> tuple[str, dict[str, Any]]:
    """``(kind, parsed body)`` of a Slack request, or ValueError with a one-line reason."""
    try:
        data = parse(body, content_type, {}, "").body
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return kind_of(data), data


def kind_of(data: Any) -> str:
    """``command``, ``action`` (a button), ``interaction`` (anything else) or ``event``."""
    if not isinstance(data, dict):
        raise ValueError("payload JSON is not a Slack interaction")
    if "command" in data:
        if not _USER_RE.match(str(data.get("user_id", ""))):
            raise ValueError("slash command has no valid user_id")
        return "command"
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ValueError("not a Slack slash command or interaction (no 'command' or 'payload')")
    if kind in ("event_callback", "url_verification", "app_rate_limited"):
        return "event"
    user = data.get("user")
    if not isinstance(user, dict) or not _USER_RE.match(str(user.get("id", ""))):
        raise ValueError("payload has no valid user id")
    return "action" if kind == "block_actions" else "interaction"


_FROZEN: list[bool] = []


def _freeze_startup_objects() -> None:
    """Once per process: everything loaded by now (modules, Bolt, boto3…) lives as long as
    the server, so keep the collector from rescanning it; a full pass otherwise stalls every
    ack in flight for ~50 ms (bench/ack_latency.py)."""
    if not _FROZEN:
        _FROZEN.append(True)
        gc.freeze()


def make_handler(services: Services) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler of ``POST /slack/events``; the Bolt app is built on first use."""
    state: dict[str, AsyncApp] = {}
    gate = AckGate()

    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(services, request, 413, "input.rejected", "body is larger than 256 KiB")
        secret = services.secrets.slack_signing_secret
        if not secret:
            return _refuse(
                services,
                request,
                401,
                "auth.rejected",
                "SLACK_SIGNING_SECRET is not set on the server",
            )
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:  # Slack always sends UTF-8; nothing to verify here
            return _refuse(services, request, 400, "input.rejected", "body is not UTF-8")
        why = _check_signature(secret, body, request.headers)
        if why:
            return _refuse(services, request, 401, "auth.rejected", why)
        try:
            bolt_request = parse(body, request.content_type, request.headers, request.query_string)
            kind = kind_of(bolt_request.body)
        except RecursionError:
            return _refuse(services, request, 400, "input.rejected", "JSON nested too deeply")
        except ValueError as exc:
            reason = "malformed JSON body" if isinstance(exc, json.JSONDecodeError) else str(exc)
            return _refuse(services, request, 400, "input.rejected", reason.splitlines()[0][:200])
        app = state.get("app")
        if app is None:
            try:
                app = state["app"] = create_app(services, gate=gate, verify=False)
                _freeze_startup_objects()
            except ConfigError as exc:
                return web.Response(status=503, text=f"{exc}\n", content_type="text/plain")
        gate.enter()
        try:
            bolt_response = await app.async_dispatch(bolt_request)
        finally:
            gate.leave()
        if bolt_response.status >= 500:
            log.error("Bolt answered %s for a %s", bolt_response.status, kind)
            response = web.Response(status=400, text="request could not be processed\n")
        elif bolt_response.status == 404:
            response = web.Response(status=200, text="")  # nothing of ours: ack and move on
        else:
            response = await to_aiohttp_response(bolt_response)
        services.metrics.acks.labels(kind).observe(time.perf_counter() - started)
        return response

    return handler


# -- Socket Mode -----------------------------------------------------------------------------


async def run_socket_mode(services: Services) -> Any:
    """Serve the same Bolt app over Socket Mode (``SLACK_APP_TOKEN``), for teams without a
    public URL. Connects in the background (slack_sdk retries and logs why while Slack cannot
    be reached) and returns the handler: ``await handler.close_async()`` disconnects."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    token = services.secrets.slack_app_token
    if not token:
        raise ConfigError("--socket-mode needs SLACK_APP_TOKEN (an app-level token, xapp-…)")
    if not token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token (xapp-…), not a bot token")
    # Socket Mode requests come over the authenticated websocket: no signature to check.
    secret = services.secrets.slack_signing_secret or "not-used-in-socket-mode"
    app = create_app(services, gate=AckGate(), signing_secret=secret)
    handler = AsyncSocketModeHandler(app, token)
    runs.spawn(handler.connect_async())
    return handler
