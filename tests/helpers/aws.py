"""A moto server on 127.0.0.1 that counts, at the server, every AWS request it answers.

Why not moto's own recorder (``/moto-api/recorder/…``)? It appends to a file named by
``MOTO_RECORDER_FILEPATH`` (read once, when moto is imported; ``./moto_recording`` otherwise)
and records only while switched on. Counting in a WSGI wrapper around the server's app sees
every request from any client — this process, a ``stabilize`` subprocess, botocore retries —
which is what hardening tests need ("exactly one DescribeInstances", "no call at all").
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from helpers import LOOPBACK, free_port

# "Credential=testing/20241204/us-east-1/ec2/aws4_request"
_SCOPE_RE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
# smithy-rpc-v2-cbor: POST /service/<ServiceName>/operation/<Operation>
_RPCV2_RE = re.compile(r"/service/[^/]+/operation/([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class AwsRequest:
    """One request the moto server received (``/moto-api/`` control calls are not counted)."""

    service: str | None  # signing name: ec2, autoscaling, monitoring, ssm, sns, sts …
    action: str | None  # DescribeInstances, SetDesiredCapacity, SendCommand …
    region: str | None
    method: str
    path: str
    time: float = field(default_factory=time.time)


def _action_of(environ: dict[str, Any], body: bytes) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:  # JSON protocols: "AmazonSSM.SendCommand"
        return target.rsplit(".", 1)[-1]
    path = environ.get("PATH_INFO", "")
    match = _RPCV2_RE.search(path)
    if match:
        return match.group(1)
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return query["Action"][0]
    ctype = environ.get("CONTENT_TYPE", "")
    if body and "x-www-form-urlencoded" in ctype:  # query protocol: ec2, autoscaling, sns
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0]
    return None


class _Counting:
    """WSGI wrapper: note each request, hand the body on untouched."""

    def __init__(self, app: Any, sink: CountingMotoServer) -> None:
        self.app = app
        self.sink = sink

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/moto-api"):
            body = b""
            length = environ.get("CONTENT_LENGTH")
            if length and length.isdigit() and int(length) > 0:
                body = environ["wsgi.input"].read(int(length))
                environ["wsgi.input"] = io.BytesIO(body)
            scope = _SCOPE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
            self.sink._note(
                AwsRequest(
                    service=scope.group(2) if scope else None,
                    action=_action_of(environ, body),
                    region=scope.group(1) if scope else None,
                    method=environ.get("REQUEST_METHOD", ""),
                    path=path,
                )
            )
        return self.app(environ, start_response)


class CountingMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` on 127.0.0.1 and a free port, counting requests at the server."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(ip_address=LOOPBACK, port=port or free_port(), verbose=False)
        self._lock = threading.Lock()
        self._requests: list[AwsRequest] = []

    def _server_entry(self) -> None:
        app = _Counting(DomainDispatcherApplication(create_backend_app), self)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def _note(self, request: AwsRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    def requests(self, service: str | None = None, action: str | None = None) -> list[AwsRequest]:
        """Requests received since the last reset, optionally only one service / action."""
        with self._lock:
            found = list(self._requests)
        return [
            r
            for r in found
            if (service is None or r.service == service) and (action is None or r.action == action)
        ]

    def count(self, service: str | None = None, action: str | None = None) -> int:
        return len(self.requests(service, action))

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Forget every resource (``POST /moto-api/reset``) and every counted request."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["status"] == "ok"
        self.clear_requests()
