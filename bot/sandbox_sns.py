"""The demo's SNS signing identity: a throwaway RSA key and self-signed certificate.

The certificate is served by a tiny HTTP server on 127.0.0.1 and messages are signed exactly
as Amazon SNS signs them (SignatureVersion 1: SHA-1, 2: SHA-256, over the documented string to
sign), so ``stabilize demo`` can send its CloudWatch alarm through the real ``/alerts/sns``
verification with ``sns.cert_url_pattern`` pointing at this server and nowhere else.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.intake.sns import string_to_sign
from bot.sandbox import LOOPBACK, SandboxError


class SnsSigner:
    """A throwaway SNS signing identity whose certificate is served on 127.0.0.1."""

    CERT_PATH = "/SimpleNotificationService-sandbox.pem"

    def __init__(self, *, port: int | None = None) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.sandbox.invalid")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def cert_url(self) -> str:
        return self.base_url + self.CERT_PATH

    @property
    def cert_url_pattern(self) -> str:
        """The ``sns.cert_url_pattern`` that accepts this signer's URLs and nothing else."""
        return rf"^http://127\.0\.0\.1:{self.port}/"

    def start(self) -> SnsSigner:
        pem = self.cert_pem

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] == SnsSigner.CERT_PATH:
                    body, status, ctype = pem, 200, "application/x-pem-file"
                else:  # the SubscribeURL of a confirmation, or anything else
                    body, status, ctype = b"<ConfirmSubscriptionResponse/>", 200, "text/xml"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep the demo's screen clean

        try:
            self._httpd = ThreadingHTTPServer((LOOPBACK, self.port or 0), Handler)
        except OSError as exc:
            raise SandboxError(
                f"cannot listen on {LOOPBACK}:{self.port} for the SNS signer ({exc.strerror})"
            ) from None
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SnsSigner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sign(self, message: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        """``message`` plus ``SignatureVersion``, ``Signature`` and ``SigningCertURL``."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signed = dict(message, SignatureVersion=version, SigningCertURL=self.cert_url)
        signature = self._key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode("ascii")
        return signed

    def notification(
        self,
        topic_arn: str,
        message: dict[str, Any] | str,
        *,
        subject: str | None = None,
        version: str = "1",
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """A signed SNS ``Notification`` as SNS POSTs it to an HTTPS subscription."""
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        body: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "UnsubscribeURL": f"{self.base_url}/?Action=Unsubscribe",
        }
        if subject is not None:
            body["Subject"] = subject
        return self.sign(body, version=version)

    def subscription_confirmation(self, topic_arn: str, *, version: str = "1") -> dict[str, Any]:
        when = dt.datetime.now(dt.UTC)
        token = uuid.uuid4().hex
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": topic_arn,
                "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
                "SubscribeURL": f"{self.base_url}/?Action=ConfirmSubscription&Token={token}",
                "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + "000Z",
            },
            version=version,
        )
