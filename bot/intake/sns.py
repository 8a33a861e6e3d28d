"""``POST /alerts/sns``: CloudWatch alarms delivered by Amazon SNS over HTTPS.

Every message is verified as AWS documents it before anything else happens:

- ``SigningCertURL`` must match ``sns.cert_url_pattern`` (default: https on AWS's SNS hosts);
  the certificate is fetched without following redirects and cached (bounded, one hour);
- the string to sign is ``"<Key>\\n<value>\\n"`` for, in this order, ``Message``, ``MessageId``,
  ``Subject`` (only when present), ``Timestamp``, ``TopicArn``, ``Type`` for a Notification,
  and ``Message``, ``MessageId``, ``SubscribeURL``, ``Timestamp``, ``Token``, ``TopicArn``,
  ``Type`` for a SubscriptionConfirmation or UnsubscribeConfirmation;
- ``SignatureVersion`` 1 is RSA PKCS#1 v1.5 with SHA-1, 2 the same with SHA-256;
- a ``TopicArn`` outside ``sns.topics`` (when that list is set) is refused.

A verified SubscriptionConfirmation is confirmed by fetching its ``SubscribeURL`` (which must
match the same pattern). A Notification carries a CloudWatch alarm: ``ALARM`` fires, ``OK``
resolves, ``INSUFFICIENT_DATA`` is acknowledged and ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections import OrderedDict
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot.config import HOST_NAME_RE
from bot.errors import AuthError, InputError
from bot.intake.common import Unavailable, handle_with, parse_json
from bot.intake.model import Alert, clip
from bot.services import Services

log = logging.getLogger(__name__)

SOURCE = "sns"
FETCH_TIMEOUT = 5.0
EC2_TIMEOUT = 2.0
CERT_TTL = 3600.0
CERT_CACHE_SIZE = 32
MAX_CERT_BYTES = 64 * 1024

SIGNED_FIELDS = {
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
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# url -> (fetched at, public key); shared by all apps in the process (certs are public).
_certs: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = OrderedDict()
# instance id -> (expires at, host name) from the EC2 Name tag
_instance_names: OrderedDict[str, tuple[float, str]] = OrderedDict()


async def handle(request: web.Request) -> web.Response:
    return await handle_with(request, SOURCE, parse, auth_status=403)


async def parse(services: Services, request: web.Request, body: bytes) -> list[Alert]:
    message = parse_json(body)
    check_shape(message)
    await verify(services, message)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        await confirm_subscription(services, message)
        return []
    if kind == "UnsubscribeConfirmation":
        log.info("SNS unsubscribed us from %s", message["TopicArn"])
        return []
    return await alerts_from_notification(services, message)


# -- verification ---------------------------------------------------------------------------


def check_shape(message: Any) -> None:
    if not isinstance(message, dict):
        raise InputError("not an SNS message: expected a JSON object")
    kind = message.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:  # a list is unhashable
        raise InputError(
            f"not an SNS message: Type must be one of {', '.join(SIGNED_FIELDS)}, got {kind!r}"
        )
    for name in ("Signature", "SignatureVersion", "SigningCertURL"):
        if not isinstance(message.get(name), str):
            raise AuthError(f"SNS {kind} is not signed (no {name!r})")
    for name in SIGNED_FIELDS[kind]:
        if name != "Subject" and not isinstance(message.get(name), str):
            raise InputError(f"SNS {kind} lacks the string field {name!r}")
    if message.get("Subject") is not None and not isinstance(message["Subject"], str):
        raise InputError("SNS Subject must be a string")


def string_to_sign(message: dict[str, Any]) -> bytes:
    """AWS's canonical string for the message's Type (Subject only when present)."""
    parts = []
    for name in SIGNED_FIELDS[message["Type"]]:
        value = message.get(name)
        if value is None:  # only Subject may be absent (check_shape saw to the rest)
            continue
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def url_allowed(services: Services, url: str) -> bool:
    return re.match(services.settings.sns.cert_url_pattern, url) is not None


async def verify(services: Services, message: dict[str, Any]) -> None:
    """Raise AuthError unless AWS (or the test key the pattern allows) signed ``message``."""
    version = message["SignatureVersion"]
    algorithm = _HASHES.get(version)
    if algorithm is None:
        raise AuthError(f"unsupported SNS SignatureVersion {version!r} (1 or 2)")
    cert_url = message["SigningCertURL"]
    if not url_allowed(services, cert_url):
        raise AuthError(
            f"SigningCertURL {clip(cert_url, 120)!r} does not match sns.cert_url_pattern"
        )
    topics = services.settings.sns.topics
    if topics and message["TopicArn"] not in topics:
        raise AuthError(
            f"TopicArn {clip(message['TopicArn'], 200)!r} is not in sns.topics; add it there"
        )
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("SNS Signature is not base64") from None
    key = await signing_key(cert_url)
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise AuthError("SNS signature does not verify against the signing certificate") from None


async def signing_key(url: str) -> rsa.RSAPublicKey:
    now = time.monotonic()
    hit = _certs.get(url)
    if hit is not None and now - hit[0] < CERT_TTL:
        _certs.move_to_end(url)
        return hit[1]
    pem = await _fetch(url, "the SNS signing certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise AuthError("SigningCertURL did not return a PEM certificate") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError("the SNS signing certificate does not hold an RSA key")
    if cert.not_valid_after_utc.timestamp() < time.time():
        raise AuthError("the SNS signing certificate has expired")
    _certs[url] = (now, key)
    _certs.move_to_end(url)
    while len(_certs) > CERT_CACHE_SIZE:
        _certs.popitem(last=False)
    return key


async def _fetch(url: str, what: str) -> bytes:
    """GET ``url`` without redirects (a redirect could leave the allowed hosts)."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise Unavailable(f"could not fetch {what}: HTTP {resp.status}")
            data = await resp.content.read(MAX_CERT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"could not fetch {what}: {type(exc).__name__}") from None
    if len(data) > MAX_CERT_BYTES:
        raise AuthError(f"{what} is larger than {MAX_CERT_BYTES // 1024} KiB")
    return data


async def confirm_subscription(services: Services, message: dict[str, Any]) -> None:
    url = message["SubscribeURL"]
    if not url_allowed(services, url):
        raise AuthError(f"SubscribeURL {clip(url, 120)!r} does not match sns.cert_url_pattern")
    await _fetch(url, "the SubscribeURL")
    log.info("confirmed the SNS subscription to %s", message["TopicArn"])


# -- CloudWatch alarm → Alert ---------------------------------------------------------------


async def alerts_from_notification(services: Services, message: dict[str, Any]) -> list[Alert]:
    # SNS delivers again when it missed our answer (and anyone may replay a captured message):
    # a MessageId already recorded is acknowledged and changes nothing.
    if services.db.query_one(
        "SELECT 1 AS hit FROM alerts WHERE external_id = ? AND source = 'sns' LIMIT 1",
        (message["MessageId"],),
    ):
        return []
    try:
        alarm = json.loads(message["Message"])
    except (ValueError, RecursionError):  # RecursionError: nested too deeply, not a ValueError
        raise InputError("the SNS Message is not a CloudWatch alarm (not JSON)") from None
    if not isinstance(alarm, dict) or not isinstance(alarm.get("AlarmName"), str):
        raise InputError("the SNS Message is not a CloudWatch alarm (no AlarmName)")
    state = alarm.get("NewStateValue")
    if state == "INSUFFICIENT_DATA":
        return []
    if state not in ("ALARM", "OK"):
        raise InputError(f"CloudWatch NewStateValue must be ALARM or OK, got {state!r}")
    trigger: dict[str, Any] = alarm["Trigger"] if isinstance(alarm.get("Trigger"), dict) else {}
    dims = dimensions(trigger)
    host = await host_for(services, dims)
    details = {
        "alarm_arn": alarm.get("AlarmArn"),
        "region": alarm.get("Region"),
        "account": alarm.get("AWSAccountId"),
        "state_change_time": alarm.get("StateChangeTime"),
        "old_state": alarm.get("OldStateValue"),
        "metric": trigger.get("MetricName"),
        "namespace": trigger.get("Namespace"),
        "threshold": trigger.get("Threshold"),
        "comparison": trigger.get("ComparisonOperator"),
        "dimensions": dims,
        "topic": message["TopicArn"],
        "subject": message.get("Subject"),
    }
    return [
        Alert(
            source=SOURCE,
            host=host,
            name=clip(alarm["AlarmName"], 200),
            status="firing" if state == "ALARM" else "resolved",
            severity="critical" if state == "ALARM" else "info",
            summary=clip(alarm.get("NewStateReason") or alarm.get("AlarmDescription") or ""),
            details={k: v for k, v in details.items() if v is not None},
            external_id=message["MessageId"],
        )
    ]


def dimensions(trigger: dict[str, Any]) -> dict[str, str]:
    """``Trigger.Dimensions`` as ``{name: value}``; real messages spell the keys ``name`` and
    ``value`` (lower case). Metric-math alarms keep them under ``Metrics[].MetricStat``."""
    found: dict[str, str] = {}
    lists = [trigger.get("Dimensions")]
    for metric in trigger.get("Metrics") or []:
        if isinstance(metric, dict):
            stat = metric.get("MetricStat") or {}
            lists.append(
                ((stat.get("Metric") or {}) if isinstance(stat, dict) else {}).get("Dimensions")
            )
    for entries in lists:
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            name = entry.get("name", entry.get("Name"))
            value = entry.get("value", entry.get("Value"))
            if isinstance(name, str) and isinstance(value, str):
                found.setdefault(name, value)
    return found


async def host_for(services: Services, dims: dict[str, str]) -> str:
    """The incident's host: inventory or EC2 ``Name`` tag for an instance, the inventory host
    of an Auto Scaling Group (else the group's name), else the first dimension's value."""
    instance_id = dims.get("InstanceId")
    if instance_id:
        return await host_for_instance(services, instance_id)
    asg = dims.get("AutoScalingGroupName")
    if asg:
        for name, settings in sorted(services.settings.hosts.items()):
            if settings.asg == asg:
                return name
        return _as_host(asg)
    for value in dims.values():
        return _as_host(value)
    return "cloudwatch"


async def host_for_instance(services: Services, instance_id: str) -> str:
    for inventory_name, settings in services.settings.hosts.items():
        if settings.instance_id == instance_id:
            return inventory_name
    now = time.monotonic()
    hit = _instance_names.get(instance_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    name: str | None
    try:
        name = await asyncio.wait_for(
            asyncio.to_thread(_name_tag, services, instance_id), timeout=EC2_TIMEOUT
        )
    except Exception as exc:  # never hold the answer up for a lookup: use the id instead
        log.warning("EC2 Name of %s not found (%s); using the instance id", instance_id, exc)
        name = None
    host = name if name and HOST_NAME_RE.match(name) else _as_host(instance_id)
    # Names rarely change; a failed lookup is retried sooner.
    _instance_names[instance_id] = (now + (600 if name else 60), host)
    while len(_instance_names) > 1024:
        _instance_names.popitem(last=False)
    return host


def _name_tag(services: Services, instance_id: str) -> str | None:
    resp = services.aws("ec2").describe_instances(InstanceIds=[instance_id])
    for reservation in resp.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            for tag in instance.get("Tags", []):
                if tag.get("Key") == "Name":
                    return str(tag.get("Value"))
    return None


def _as_host(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:63]
    return cleaned if cleaned and HOST_NAME_RE.match(cleaned) else "cloudwatch"


def sns_json(message: dict[str, Any]) -> str:
    """For tests and docs: the JSON body SNS would POST."""
    return json.dumps(message)
