"""The demo's embedded AWS: moto on 127.0.0.1 plus a local SNS signer.

``Sandbox`` starts moto's ``ThreadedMotoServer`` on a free loopback port and points *this
process* at it (``AWS_ENDPOINT_URL`` and fake credentials, restored on ``stop``), so the real
boto3 code paths of diagnosis and the runbooks run against it and nothing reaches a real cloud.
``seed`` creates the demo world: ``prod-web-01`` (t3.micro, tag ``Name``) in the Auto Scaling
Group ``web-asg``, CPU metrics shaped like a 9 a.m. spike, a CloudWatch alarm and an SNS topic.

``SnsSigner`` is the other half of the alarm path: a throwaway RSA key and self-signed
certificate, the certificate served by a tiny HTTP server on 127.0.0.1, and messages signed
exactly as SNS signs them. The demo's ``sns.cert_url_pattern`` points at that server, so the
alarm goes through the real ``/alerts/sns`` signature check.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.errors import StabilizeError

LOOPBACK = "127.0.0.1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEMO_HOST = "prod-web-01"
DEMO_ASG = "web-asg"
DEMO_TYPE = "t3.micro"
DEMO_TOPIC = "stabilize-alarms"
DEMO_ALARM = "prod-web-01-cpu-high"
INSTALL_HINT = "pip install -e '.[demo]'"

# Only inside the demo process: never a real profile, credential file or metadata service.
_SANDBOX_ENV = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN")


class SandboxError(StabilizeError):
    """The sandbox cannot start; the message says how to fix it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def moto_missing() -> str | None:
    """None when moto's server is importable, else a one-line hint."""
    try:
        import moto.moto_server.threaded_moto_server  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError:
        return f"the demo needs the 'demo' extra (moto): {INSTALL_HINT} (or ./run demo)"
    return None


@dataclass(frozen=True)
class SeededWorld:
    instance_id: str
    instance_type: str
    asg: str
    topic_arn: str
    alarm_name: str
    alarm_arn: str
    region: str


class Sandbox:
    """moto on 127.0.0.1:<free port>, with this process's AWS environment pointed at it."""

    def __init__(self, *, region: str = "us-east-1", port: int | None = None) -> None:
        self.region = region
        self.port = port
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.world: SeededWorld | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Sandbox:
        hint = moto_missing()
        if hint:
            raise SandboxError(hint)
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        # werkzeug would print a line per AWS call over the demo's screen.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = self.port or free_port()
        server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise SandboxError(
                f"cannot listen on {LOOPBACK}:{self.port} for the AWS sandbox ({exc.strerror});"
                " free the port or run the demo again"
            ) from None
        self._server = server
        self._point_env_here()
        return self

    def _point_env_here(self) -> None:
        wanted: dict[str, str | None] = {
            **_SANDBOX_ENV,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
        wanted.update({name: None for name in _CLEARED_ENV})
        for name, value in wanted.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def stop(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.region).client(service, endpoint_url=self.url)

    # -- the demo world ---------------------------------------------------------------------

    def seed(self, *, now: dt.datetime | None = None) -> SeededWorld:
        """Create prod-web-01 in web-asg, its CPU spike, the alarm and the SNS topic."""
        self.world = seed_world(self.client, self.region, now=now)
        return self.world

    def instance_type(self, instance_id: str) -> str:
        found = self.client("ec2").describe_instances(InstanceIds=[instance_id])
        return str(found["Reservations"][0]["Instances"][0]["InstanceType"])

    def desired_capacity(self) -> int:
        groups = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[DEMO_ASG]
        )["AutoScalingGroups"]
        return int(groups[0]["DesiredCapacity"])

    def alarm_message(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The JSON CloudWatch puts in the SNS ``Message`` when the alarm fires."""
        if self.world is None:
            raise SandboxError("seed the sandbox before raising its alarm")
        return cloudwatch_alarm(self.world, now=now)


def seed_world(
    client: Callable[[str], Any], region: str, *, now: dt.datetime | None = None
) -> SeededWorld:
    """The demo world, created through ``client(service)`` (any moto endpoint will do)."""
    ec2 = client("ec2")
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name_tag = {"Key": "Name", "Value": DEMO_HOST}
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType=DEMO_TYPE,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [name_tag]}],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]

    asg = client("autoscaling")
    asg.create_launch_configuration(
        LaunchConfigurationName=f"{DEMO_ASG}-lc", ImageId=image_id, InstanceType=DEMO_TYPE
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=DEMO_ASG,
        LaunchConfigurationName=f"{DEMO_ASG}-lc",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=[f"{region}a"],
    )
    # Attaching raises the desired capacity to 1: prod-web-01 is the group's one instance.
    asg.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=DEMO_ASG)
    # What an operator does before stopping a member: the group must not replace it meanwhile.
    asg.suspend_processes(AutoScalingGroupName=DEMO_ASG, ScalingProcesses=["ReplaceUnhealthy"])

    topic_arn = client("sns").create_topic(Name=DEMO_TOPIC)["TopicArn"]
    cloudwatch = client("cloudwatch")
    for chunk in _chunks(list(cpu_spike(instance_id, now=now)), 20):
        cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=chunk)
    cloudwatch.put_metric_alarm(
        AlarmName=DEMO_ALARM,
        AlarmDescription=f"CPU above 90% on {DEMO_HOST}",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        Period=300,
        EvaluationPeriods=1,
        Threshold=90.0,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[topic_arn],
    )
    return SeededWorld(
        instance_id=instance_id,
        instance_type=DEMO_TYPE,
        asg=DEMO_ASG,
        topic_arn=topic_arn,
        alarm_name=DEMO_ALARM,
        alarm_arn=f"arn:aws:cloudwatch:{region}:{ACCOUNT_ID}:alarm:{DEMO_ALARM}",
        region=region,
    )


def cpu_spike(instance_id: str, *, now: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    """Two hours of 5-minute CPU averages: a quiet morning, then the 9 a.m. rush pinning the
    CPU in the last half hour (the seed's shape, shifted so it ends now)."""
    end = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
    points = 24
    for i in range(points):
        minutes_ago = (points - 1 - i) * 5
        if minutes_ago > 35:
            value = 14.0 + (i * 7) % 9  # idle hum
        elif minutes_ago > 20:
            value = 55.0 + (35 - minutes_ago) * 2.5  # the rush begins
        else:
            value = 94.0 + (i % 3) * 1.7  # pinned
        yield {
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": end - dt.timedelta(minutes=minutes_ago),
            "Value": value,
            "Unit": "Percent",
        }


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cloudwatch_alarm(world: SeededWorld, *, now: dt.datetime | None = None) -> dict[str, Any]:
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"
    return {
        "AlarmName": world.alarm_name,
        "AlarmDescription": f"CPU above 90% on {DEMO_HOST}",
        "AWSAccountId": ACCOUNT_ID,
        "AlarmConfigurationUpdatedTimestamp": stamp,
        "NewStateValue": "ALARM",
        "NewStateReason": (
            "Threshold Crossed: 1 out of the last 1 datapoints [97.4] was greater than the"
            " threshold (90.0) (minimum 1 datapoint for OK -> ALARM transition)."
        ),
        "StateChangeTime": stamp,
        "Region": "US East (N. Virginia)",
        "AlarmArn": world.alarm_arn,
        "OldStateValue": "OK",
        "OKActions": [],
        "AlarmActions": [world.topic_arn],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "CPUUtilization",
            "Namespace": "AWS/EC2",
            "StatisticType": "Statistic",
            "Statistic": "AVERAGE",
            "Unit": None,
            "Dimensions": [{"value": world.instance_id, "name": "InstanceId"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 90.0,
            "TreatMissingData": "missing",
            "EvaluateLowSampleCountPercentile": "",
        },
    }


# -- the SNS signer ---------------------------------------------------------------------------

# Which fields SNS signs, in this order, per message type.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def string_to_sign(message: dict[str, Any]) -> bytes:
    """SNS's canonical text: ``name\\nvalue\\n`` for each signed field present."""
    fields = _SIGNED_FIELDS[message["Type"]]
    parts = []
    for name in fields:
        if name in message and message[name] is not None:
            parts.append(f"{name}\n{message[name]}\n")
    return "".join(parts).encode("utf-8")


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


def alarm_subject(world: SeededWorld) -> str:
    return f'ALARM: "{world.alarm_name}" in US East (N. Virginia)'
