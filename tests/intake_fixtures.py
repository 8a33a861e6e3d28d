"""Fixtures for the alert-intake tests: the real web app on 127.0.0.1, talking to the Slack
stand-in, with the automatic diagnosis replaced by a recorder.

Import what you use: ``from intake_fixtures import bot_server, diagnoses  # noqa: F401``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "intake"
WEBHOOK_TOKEN = "stabilize-test-webhook-token-7c1e"  # = helpers.signers.DEFAULT_WEBHOOK_TOKEN


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@dataclass
class Diagnoses:
    """Records the diagnoses the bot would have started: ``[(host, incident_id)]``."""

    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, services: Any, host: str, incident_id: int) -> None:
        self.calls.append((host, incident_id))


@pytest.fixture
def diagnoses(monkeypatch: pytest.MonkeyPatch) -> Diagnoses:
    import bot.incidents

    recorder = Diagnoses()
    monkeypatch.setattr(bot.incidents, "diagnosis_hook", recorder)
    return recorder


@pytest.fixture
def services(settings_factory: Any, tmp_path: Path) -> Iterator[Any]:
    """The bot's services on a fresh database, without Slack: for calling intake directly."""
    from bot.config import Secrets
    from bot.services import build_services

    built = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    yield built
    built.close()


@dataclass
class BotServer:
    url: str
    services: Any
    session: aiohttp.ClientSession

    async def post(
        self, route: str, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        async with self.session.post(self.url + route, data=data, headers=headers or {}) as resp:
            try:
                answer = await resp.json(content_type=None)
            except ValueError:
                answer = {"raw": await resp.text()}
            return resp.status, answer

    def audit(self, action: str | None = None) -> list[dict[str, Any]]:
        return self.services.audit.list(action=action)

    def incidents(self) -> list[dict[str, Any]]:
        return self.services.db.query("SELECT * FROM incidents ORDER BY id")


async def start_bot(
    tmp_path: Path, slack_api: Any, settings: Any, **outbox: float
) -> tuple[BotServer, web.AppRunner]:
    from bot.config import Secrets
    from bot.server import build_web_app
    from bot.services import build_services

    secrets = Secrets(
        slack_bot_token=slack_api.token,
        slack_signing_secret="test-signing-secret",
        webhook_token=WEBHOOK_TOKEN,
        slack_api_url=slack_api.url,
    )
    services = build_services(settings, secrets, tmp_path / "bot.db")
    for name, value in outbox.items():
        setattr(services.outbox, name, value)
    runner = web.AppRunner(build_web_app(services), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    return BotServer(f"http://127.0.0.1:{port}", services, session), runner


@pytest.fixture
async def bot_server(
    tmp_path: Path, slack_api: Any, settings_factory: Any, diagnoses: Diagnoses
) -> AsyncIterator[BotServer]:
    """The real ``stabilize`` web app (outbox worker included) on 127.0.0.1."""
    server, runner = await start_bot(tmp_path, slack_api, settings_factory())
    try:
        yield server
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()


async def until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Await ``predicate()`` becoming truthy without blocking the bot on this event loop.
    The timeout is only a bound so a broken test does not hang, not a speed assertion."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def top_level(slack_api: Any, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
    """Top-level messages in ``channel`` (thread replies left out)."""
    return [m for m in slack_api.messages(channel) if m.get("thread_ts") in (None, m["ts"])]


# -- SNS: a test signing key, its certificate served on 127.0.0.1 -----------------------------

TOPIC = "arn:aws:sns:us-east-1:123456789012:alarms"


class SnsSigner:
    """Signs SNS messages as AWS does (v1 SHA1-RSA, v2 SHA256-RSA) with a test key."""

    def __init__(self) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.invalid")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.base_url = ""  # set by the cert server fixture
        self._n = 0

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/SimpleNotificationService-test.pem"

    def sign(
        self,
        message: dict[str, Any],
        *,
        version: str = "1",
        key: Any = None,
        cert_url: str | None = None,
    ) -> dict[str, Any]:
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        from bot.intake.sns import string_to_sign

        signed = {**message, "SignatureVersion": version}
        signed["SigningCertURL"] = cert_url or self.cert_url
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def notification(
        self, alarm: dict[str, Any], *, subject: str | None = "ALARM", topic: str = TOPIC
    ) -> dict[str, Any]:
        self._n += 1
        message: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": f"5f1b2c3d-0000-4000-8000-{self._n:012d}",
            "TopicArn": topic,
            "Message": json.dumps(alarm),
            "Timestamp": "2026-12-04T20:30:12.400Z",
            "UnsubscribeURL": f"{self.base_url}/unsubscribe?SubscriptionArn={topic}:1",
        }
        if subject is not None:
            message["Subject"] = subject
        return message

    def subscription(self, *, subscribe_url: str | None = None) -> dict[str, Any]:
        token = "2336412f37fb687f5d51e6e2425c464de12884217c5a6e2bd7d5d5ad"
        return {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": token,
            "TopicArn": TOPIC,
            "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
            "SubscribeURL": subscribe_url or f"{self.base_url}/confirm?Token={token}",
            "Timestamp": "2026-12-04T20:00:00.000Z",
        }


@dataclass
class CertServer:
    signer: SnsSigner
    hits: list[str] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        return sum(1 for path in self.hits if path.startswith(prefix))


@pytest.fixture(scope="session")
def _sns_keys() -> SnsSigner:
    return SnsSigner()  # RSA key generation is the slow part: once per session


@pytest.fixture
async def sns_cert_server(_sns_keys: SnsSigner) -> AsyncIterator[CertServer]:
    """Serves the test certificate and a SubscribeURL on 127.0.0.1, recording each GET."""
    server = CertServer(_sns_keys)

    async def serve(request: web.Request) -> web.Response:
        server.hits.append(request.path_qs)
        if request.path.endswith(".pem"):
            return web.Response(body=_sns_keys.cert_pem, content_type="application/x-pem-file")
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    _sns_keys.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
