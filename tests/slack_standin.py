"""A local stand-in for the Slack Web API, good enough for slack_sdk and slack_bolt.

It serves ``/api/<method>`` on 127.0.0.1 from its own thread and event loop, so sync tests,
async tests and ``stabilize`` subprocesses (``SLACK_API_URL``) can all talk to it. It answers
like Slack does — HTTP 200 with ``{"ok": false, "error": …}`` for API errors, HTTP 429 with
``Retry-After`` when rate limited — and records every call for assertions::

    api = SlackStandIn().start()
    ...
    [post] = api.calls("chat.postMessage")
    assert post.args["channel"] == "C0ALERTS"
    api.stop()
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

LOOPBACK = "127.0.0.1"
DEFAULT_TOKEN = "xoxb-000000000001-000000000002-stabilizeTESTtoken"  # noqa: S105 - fake
TS_BASE = 1733340000
# Sent by slack_sdk as JSON strings in form bodies; decoded so tests see one shape.
_JSON_FIELDS = ("blocks", "attachments", "metadata")
_USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,31}$")
RESPONSE_URL_USES = 5  # Slack: a response_url works five times within 30 minutes


@dataclass(frozen=True)
class Call:
    """One request the stand-in received."""

    method: str  # "chat.postMessage", … or "response_url"
    args: dict[str, Any]  # body and query merged; JSON fields decoded; no "token"
    headers: dict[str, str]
    time: float
    status: int  # HTTP status answered
    ok: bool  # the "ok" field answered
    http_method: str = "POST"
    path: str = ""
    raw: bytes = b""
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.response.get("error")


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    error: str | None
    method: str | None
    remaining: int | None = None  # fail_next
    until: float | None = None  # fail_for (time.monotonic())

    def matches(self, method: str) -> bool:
        if self.method is not None:
            return self.method == method
        return method != "response_url"

    def live(self) -> bool:
        if self.remaining is not None:
            return self.remaining > 0
        return self.until is not None and time.monotonic() < self.until


class SlackStandIn:
    """The stand-in server. ``url`` is the base URL to give slack_sdk (ends with ``/api/``)."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        team_id: str = "T0TEAM",
        team: str = "stabilize-test",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0STABILIZE",
    ) -> None:
        self.token = token
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.port = 0
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemeral: list[dict[str, Any]] = []
        self._users: dict[str, dict[str, Any]] = {}
        self._response_uses: dict[str, int] = {}
        self._ts_counter = 0
        self._response_counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._startup_error: BaseException | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def url(self) -> str:
        """What ``SLACK_API_URL`` / ``WebClient(base_url=…)`` should be."""
        return f"{self.base_url}api/"

    def response_url(self) -> str:
        """A fresh Slack-style ``response_url`` pointing at this stand-in."""
        with self._lock:
            self._response_counter += 1
            n = self._response_counter
        return f"{self.base_url}response_url/T0TEAM/{n}/{n:024x}"

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="slack-standin", daemon=True
        )
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("the Slack stand-in did not start within 15s")
        if self._startup_error is not None:
            raise RuntimeError(f"the Slack stand-in did not start: {self._startup_error}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)
        self._loop = self._thread = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # report to start(), which raises in the test's thread
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            if self._sock is not None:
                self._sock.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response_url/{rest:.+}", self._response_url_post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Bind the socket ourselves: port 0 means no race for a "free" port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    # -- what tests use ------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Every call received (failed ones too, see ``Call.status``), oldest first."""
        with self._lock:
            found = list(self._calls)
        return [c for c in found if method is None or c.method == method]

    def responses(self, url: str | None = None) -> list[Call]:
        """Posts to response URLs (all, or to one ``url`` from ``response_url()``)."""
        path = url.split(f":{self.port}", 1)[-1] if url else None
        return [c for c in self.calls("response_url") if path is None or c.path == path]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until ``count`` calls of ``method`` arrived (bots keep working after the ack)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls(method)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"expected {count} {method} call(s) within {timeout}s, got {len(found)}"
                )
            time.sleep(0.02)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages posted (as currently stored: updates applied), oldest first."""
        with self._lock:
            if channel is not None:
                return [dict(m) for m in self._messages.get(channel, [])]
            return [dict(m) for msgs in self._messages.values() for m in msgs]

    def ephemeral(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._ephemeral]

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: float | None = 1,
        *,
        error: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``n`` calls (of ``method``, or any API method) with a failure.

        ``status=429``: HTTP 429, ``Retry-After: retry_after``, ``error: ratelimited``.
        ``status>=500``: that HTTP status, ``error`` (default ``internal_error``).
        ``status=200`` with ``error``: Slack's usual ``{"ok": false, "error": error}``.
        """
        with self._lock:
            self._failures.append(_Failure(status, retry_after, error, method, remaining=n))

    def fail_for(
        self,
        seconds: float,
        status: int = 429,
        retry_after: float | None = 1,
        *,
        error: str | None = None,
        method: str | None = None,
    ) -> None:
        """Like ``fail_next`` but for every call during the next ``seconds``."""
        with self._lock:
            self._failures.append(
                _Failure(status, retry_after, error, method, until=time.monotonic() + seconds)
            )

    def add_user(self, user_id: str, **fields: Any) -> None:
        """Override what ``users.info`` says about ``user_id`` (e.g. ``deleted=True``)."""
        with self._lock:
            self._users[user_id] = {**self._default_user(user_id), **fields}

    def reset(self) -> None:
        """Forget calls, messages, injected failures and users."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()
            self._messages.clear()
            self._ephemeral.clear()
            self._users.clear()
            self._response_uses.clear()

    # -- the server ----------------------------------------------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += 1
        micro = self._ts_counter * 100
        return f"{TS_BASE + micro // 1_000_000}.{micro % 1_000_000:06d}"

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            self._failures = [f for f in self._failures if f.live()]
            for failure in self._failures:
                if failure.matches(method):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                    return failure
        return None

    def _record(
        self,
        request: web.Request,
        method: str,
        args: dict[str, Any],
        raw: bytes,
        status: int,
        body: dict[str, Any],
    ) -> None:
        call = Call(
            method=method,
            args=args,
            headers=dict(request.headers),
            time=time.time(),
            status=status,
            ok=bool(body.get("ok")),
            http_method=request.method,
            path=request.path,
            raw=raw,
            response=body,
        )
        with self._lock:
            self._calls.append(call)

    @staticmethod
    def _failure_response(failure: _Failure) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers: dict[str, str] = {}
        if failure.status == 429:
            if failure.retry_after is not None:
                ra = failure.retry_after
                headers["Retry-After"] = str(int(ra) if float(ra).is_integer() else ra)
            return 429, {"ok": False, "error": failure.error or "ratelimited"}, headers
        default = "internal_error" if failure.status >= 500 else "fatal_error"
        return failure.status, {"ok": False, "error": failure.error or default}, headers

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        args, body_token = _parse_args(request, raw)
        failure = self._take_failure(method)
        if failure is not None:
            status, body, headers = self._failure_response(failure)
        else:
            status, headers = 200, {}
            body = self._answer(method, args, request.headers.get("Authorization"), body_token)
        self._record(request, method, args, raw, status, body)
        return web.json_response(body, status=status, headers=headers)

    async def _response_url_post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        args, _ = _parse_args(request, raw)
        failure = self._take_failure("response_url")
        if failure is not None:
            status, body, headers = self._failure_response(failure)
        else:
            headers = {}
            with self._lock:
                uses = self._response_uses.get(request.path, 0) + 1
                self._response_uses[request.path] = uses
            if uses > RESPONSE_URL_USES:
                status, body = 404, {"ok": False, "error": "used_url"}
            elif not args:
                status, body = 400, {"ok": False, "error": "invalid_payload"}
            else:
                status, body = 200, {"ok": True}
        self._record(request, "response_url", args, raw, status, body)
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, args: dict[str, Any], authorization: str | None, body_token: str | None
    ) -> dict[str, Any]:
        handler = self._handlers().get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        token = None
        if authorization and authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        token = token or body_token
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        with self._lock:
            return handler(args)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "api.test": lambda args: {"ok": True, "args": args},
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "users.info": self._users_info,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
        }

    # Handlers run under self._lock.

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{self.team}.slack.com/",
            "team": self.team,
            "user": "stabilize",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        return None

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": args.get("text", ""),
            "ts": ts,
        }
        for key in ("blocks", "attachments", "metadata"):
            if args.get(key):
                message[key] = args[key]
        thread_ts = args.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
            parent = self._find(channel, str(thread_ts))
            if parent is not None:
                parent.setdefault("thread_ts", parent["ts"])
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
            if _truthy(args.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
        self._messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not ts:
            return {"ok": False, "error": "message_not_found"}
        message = self._find(channel, str(ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return {"ok": False, "error": "no_text"}
        if "text" in args:
            message["text"] = args["text"]
        for key in ("blocks", "attachments", "metadata"):
            if key in args:
                message[key] = args[key]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": message["ts"],
            "text": message.get("text", ""),
            "message": dict(message),
        }

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        self._ephemeral.append({**args, "ts": ts})
        return {"ok": True, "message_ts": ts}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("message_ts")
        if not channel or not ts or self._find(channel, str(ts)) is None:
            return {"ok": False, "error": "message_not_found"}
        link = f"https://{self.team}.slack.com/archives/{channel}/p{str(ts).replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _default_user(self, user_id: str) -> dict[str, Any]:
        name = user_id.lower().removeprefix("u0") or user_id.lower()
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": name.capitalize(),
            "deleted": False,
            "is_bot": False,
            "is_admin": False,
            "tz": "UTC",
            "tz_offset": 0,
            "profile": {
                "real_name": name.capitalize(),
                "display_name": name,
                "email": f"{name}@example.com",
            },
        }

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user") or "")
        if user_id in self._users:
            return {"ok": True, "user": dict(self._users[user_id])}
        if not _USER_ID_RE.match(user_id):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": self._default_user(user_id)}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        # Like Slack: top-level messages (and thread broadcasts), newest first.
        found = [
            dict(m)
            for m in self._messages.get(channel, [])
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]
        found = _window(found, args)
        found.reverse()
        limit = int(args.get("limit") or 100)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), str(args.get("ts") or "")
        if not channel or self._find(channel, ts) is None:
            return {"ok": False, "error": "thread_not_found"}
        found = [
            dict(m)
            for m in self._messages.get(channel, [])
            if m["ts"] == ts or m.get("thread_ts") == ts
        ]
        limit = int(args.get("limit") or 1000)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _window(messages: list[dict[str, Any]], args: dict[str, Any]) -> list[dict[str, Any]]:
    inclusive = _truthy(args.get("inclusive"))
    oldest = float(args.get("oldest") or 0)
    latest = float(args["latest"]) if args.get("latest") else None

    def inside(m: dict[str, Any]) -> bool:
        ts = float(m["ts"])
        lower = ts >= oldest if inclusive else ts > oldest
        upper = latest is None or (ts <= latest if inclusive else ts < latest)
        return lower and upper

    return [m for m in messages if inside(m)]


def _parse_args(request: web.Request, raw: bytes) -> tuple[dict[str, Any], str | None]:
    """Query string + body (form or JSON) as one dict, like Slack reads them."""
    args: dict[str, Any] = dict(request.query)
    ctype = request.content_type
    if raw:
        if ctype == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict):
                args.update(body)
        elif ctype in ("application/x-www-form-urlencoded", ""):
            args.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    for key in _JSON_FIELDS:
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError:
                pass
    token = args.pop("token", None)
    return args, token if isinstance(token, str) else None
