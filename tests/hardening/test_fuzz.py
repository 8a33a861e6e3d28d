"""Property-based fuzzing (hypothesis) of every intake parser and of the slash-command parser:
whatever comes in, the only way out is a result or the one-line domain error — never another
exception (which the HTTP middleware would turn into an unaudited answer) and never a 500.

Bounded: ``EXAMPLES`` per property, no deadline, derandomized so CI runs are repeatable.
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runbook_fixtures import FAST

from bot.app import classify
from bot.config import HOST_NAME_RE, Secrets, parse_settings
from bot.errors import AuthError, InputError, StabilizeError
from bot.intake import agent, alertmanager, sns
from bot.intake.model import Alert
from bot.services import build_services
from commands.actions import handle_action
from commands.reply import Reply
from commands.slash import handle_command

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RUNS: dict[str, int] = {}  # property → examples run (for the README figures)

# Text an attacker would pick: shell syntax, control and bidi characters, unicode look-alikes.
NASTY = [
    ";",
    "|",
    "$(id)",
    "`id`",
    "\n",
    "\r\n",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "ｐ",  # noqa: RUF001 - fullwidth on purpose
    "ø",
    "../",
    "&&",
    ">",
    "'",
    '"',
    "\\",
    "%00",
    " ",
    "=",
    "*",
]
nasty_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(NASTY) | st.text(string.ascii_letters + "-._", max_size=8))
    .map("".join)
    .filter(lambda s: len(s) < 200),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=20,
)
hosts = st.sampled_from(["prod-web-01", "web-7", "db.internal", "a"]) | nasty_text


def count(name: str) -> None:
    RUNS[name] = RUNS.get(name, 0) + 1


def assert_alert(alert: Alert) -> None:
    """What every accepted alert must look like, whatever the input was."""
    assert HOST_NAME_RE.match(alert.host), alert.host
    assert alert.status in ("firing", "resolved")
    assert alert.severity in ("critical", "warning", "info")
    assert isinstance(alert.summary, str) and len(alert.summary) <= 500
    assert "\n" not in alert.summary
    json.dumps(alert.details, default=str)  # storable


# -- /alerts/agent ------------------------------------------------------------------------------


agent_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "host": hosts | json_values,
            "kind": st.sampled_from(agent.KINDS) | json_values,
            "severity": st.sampled_from(["critical", "warning", "info"]) | json_values,
            "summary": nasty_text | json_values,
            "details": st.dictionaries(nasty_text, json_values, max_size=3) | json_values,
            "resolved": st.booleans() | json_values,
        },
    ),
)


@FUZZ
@given(body=agent_bodies)
def test_agent_parser_returns_an_alert_or_one_input_error(body: Any) -> None:
    count("agent")
    try:
        alert = agent.parse_payload(body)
    except InputError:
        return
    assert_alert(alert)


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_agent_bytes_parse_or_refuse(raw: bytes) -> None:
    count("agent-bytes")
    try:
        agent.parse_payload(agent.parse_json(raw))
    except InputError:
        pass


@FUZZ
@given(
    timestamp=st.none() | nasty_text | st.integers().map(str),
    signature=st.none()
    | nasty_text
    | st.text(string.hexdigits, max_size=70).map("sha256=".__add__),
    body=st.binary(max_size=64),
)
def test_agent_signature_check_only_ever_says_no(timestamp, signature, body) -> None:
    count("agent-signature")
    services = SimpleNamespace(secrets=Secrets(webhook_token="k" * 16))
    with pytest.raises(AuthError):
        agent.check_signature(services, timestamp, signature, body)


# -- /alerts/alertmanager -------------------------------------------------------------------------


am_labels = st.dictionaries(
    st.sampled_from(["alertname", "instance", "host", "nodename", "severity", "job"]) | nasty_text,
    hosts | json_values,
    max_size=5,
)
am_entries = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved"]) | json_values,
        "labels": am_labels | json_values,
        "annotations": st.dictionaries(nasty_text, nasty_text, max_size=3) | json_values,
        "fingerprint": nasty_text | json_values,
        "startsAt": nasty_text,
    },
)
am_bodies = json_values | st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["4", 4, "3"]) | json_values,
        "status": st.sampled_from(["firing", "resolved"]) | json_values,
        "alerts": st.lists(am_entries, max_size=4) | json_values,
        "commonLabels": am_labels | json_values,
    },
)


@FUZZ
@given(body=am_bodies)
def test_alertmanager_parser_returns_alerts_or_one_input_error(body: Any) -> None:
    count("alertmanager")
    try:
        alerts = alertmanager.parse_payload(body)
    except InputError:
        return
    for alert in alerts:
        assert_alert(alert)


# -- /alerts/sns ---------------------------------------------------------------------------------


@pytest.fixture
def sns_services(tmp_path):
    """Real services (the SNS parser looks MessageIds up in the database), no AWS at all."""

    def no_aws(service: str) -> Any:
        raise RuntimeError("no AWS in this test")

    settings = parse_settings(
        {
            "slack": {"channel": "C0ALERTS"},
            "hosts": {"web-7": {"instance_id": "i-0abcdef01", "asg": "web-asg"}},
        },
        "<fuzz>",
    )
    svc = build_services(settings, Secrets(), tmp_path / "sns.db", slack=False)
    svc.aws = no_aws  # type: ignore[method-assign]
    yield svc
    svc.close()


alarm_dims = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["InstanceId", "AutoScalingGroupName", "Other"]) | json_values,
            "value": hosts | st.sampled_from(["i-0abc", "web-asg"]) | json_values,
        },
    )
    | json_values,
    max_size=3,
)
alarms = json_values | st.fixed_dictionaries(
    {},
    optional={
        "AlarmName": nasty_text | json_values,
        "NewStateValue": st.sampled_from(["ALARM", "OK", "INSUFFICIENT_DATA"]) | json_values,
        "NewStateReason": nasty_text | json_values,
        "Trigger": st.fixed_dictionaries({}, optional={"Dimensions": alarm_dims}) | json_values,
    },
)


@FUZZ
@given(alarm=alarms, raw_message=st.none() | nasty_text)
def test_sns_alarm_parser_returns_alerts_or_one_input_error(
    sns_services, alarm: Any, raw_message
) -> None:
    count("sns-alarm")
    message = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:alarms",
        "MessageId": "m-1",
        "Message": raw_message if raw_message is not None else json.dumps(alarm),
    }
    try:
        alerts = asyncio.run(sns.alerts_from_notification(sns_services, message))
    except InputError:
        return
    for alert in alerts:
        assert_alert(alert)


sns_messages = json_values | st.fixed_dictionaries(
    {},
    optional={
        name: nasty_text | json_values
        for name in (
            "Type",
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Token",
            "SubscribeURL",
            "Signature",
            "SignatureVersion",
            "SigningCertURL",
        )
    },
).map(lambda m: {**m, "Type": m.get("Type", "Notification")} if isinstance(m, dict) else m)


@FUZZ
@given(message=sns_messages)
def test_sns_shape_check_and_verification_only_ever_refuse(message: Any) -> None:
    """Nothing generated here is signed by the test key: the only outcomes are refusals, and
    no certificate is fetched (the pattern allows no host at all)."""
    count("sns-verify")
    services = SimpleNamespace(
        settings=SimpleNamespace(sns=SimpleNamespace(cert_url_pattern=r"^(?!x)x", topics=[]))
    )
    with pytest.raises((InputError, AuthError)):
        sns.check_shape(message)
        sns.string_to_sign(message)
        asyncio.run(sns.verify(services, message))


# -- /slack/events: the body classifier ------------------------------------------------------------


@FUZZ
@given(
    body=st.text(max_size=300)
    | st.dictionaries(nasty_text, nasty_text, max_size=4).map(
        lambda d: "&".join(f"{k}={v}" for k, v in d.items())
    )
    | json_values.map(lambda v: "payload=" + json.dumps(v)),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "", "text/plain"]
    ),
)
def test_slack_classifier_returns_a_kind_or_a_value_error(body: str, content_type: str) -> None:
    count("slack-classify")
    try:
        kind, data = classify(body, content_type)
    except ValueError:
        return
    assert kind in ("command", "action", "interaction", "event")
    assert isinstance(data, dict)


# -- the slash command and the buttons ------------------------------------------------------------


@pytest.fixture
def services(tmp_path):
    settings = parse_settings(
        {
            "slack": {"channel": "C0ALERTS"},
            "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
            "hosts": {"prod-web-01": {"ssh": {"host": "127.0.0.1", "port": 9, "user": "u"}}},
        },
        "<fuzz>",
    )
    svc = build_services(settings, Secrets(), tmp_path / "fuzz.db", slack=False)
    yield svc
    svc.close()


durations = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(0, 10**30),
    st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
)
words = (
    st.sampled_from(
        ["run", "audit", "help", "add-swap", "resize-instance", "prod-web-01", "size=4G", "24h"]
    )
    | durations
    | nasty_text.map(lambda s: s.replace(" ", "")).filter(bool)
)
commands = st.lists(words, max_size=6).map(" ".join) | nasty_text


async def _answer(reply: Reply) -> list[str]:
    said: list[str] = []

    async def respond(text: str, blocks: Any = None, *, replace_original: bool = False) -> None:
        said.append(text)

    if reply.followup is not None:
        await reply.followup(respond)
    return said


@FUZZ
@given(text=commands, user=st.sampled_from(["U0ALICE", "U0CAROL", "W0X", ""]) | nasty_text)
def test_slash_commands_never_raise_and_store_only_well_formed_requests(
    services, text: str, user: str
) -> None:
    count("slash")
    reply = handle_command(services, user=user, channel="C0ALERTS", text=text)
    assert isinstance(reply, Reply) and reply.text
    if reply.followup is not None and text.split()[:1] == ["run"]:
        asyncio.run(_answer(reply))
    for row in services.db.query("SELECT runbook, host, raw_params FROM requests"):
        assert HOST_NAME_RE.match(row["host"]), row
        for key, value in json.loads(row["raw_params"]).items():
            assert not set(key + value) & set(";|$`&<>\n\r\x00'\"\\ "), row
    assert services.audit.verify().ok


@FUZZ
@given(
    action_id=st.sampled_from(["approve", "approve_1", "reject", "recommend_1", "x"]) | nasty_text,
    value=st.sampled_from(["R-0000000000", "1", ""]) | nasty_text,
    user=st.sampled_from(["U0ALICE", "U0BOB", "U0MALLORY"]) | nasty_text,
)
def test_button_clicks_never_raise(services, action_id: str, value: str, user: str) -> None:
    count("click")
    try:
        reply = handle_action(
            services, user=user, channel="C0ALERTS", action_id=action_id, value=value
        )
    except StabilizeError as exc:  # pragma: no cover - handle_action must not raise at all
        raise AssertionError(f"handle_action raised {exc!r}") from None
    assert isinstance(reply, Reply)
    assert services.db.query("SELECT count(*) AS n FROM executions")[0]["n"] == 0


# -- the same, over real HTTP ---------------------------------------------------------------------


class ThreadedBot:
    """The real web app served from its own thread and loop, so sync hypothesis tests can
    POST to it with urllib."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ThreadedBot:
        from aiohttp import web
        from helpers import free_port

        from bot.server import build_web_app

        self._thread.start()

        async def up() -> None:
            self._runner = web.AppRunner(build_web_app(self.services), access_log=None)
            await self._runner.setup()
            self.port = free_port()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    def post(self, route: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{route}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def rejections(self) -> int:
        row = self.services.db.query_one(
            "SELECT count(*) AS n FROM audit_events"
            " WHERE action IN ('auth.rejected', 'input.rejected')"
        )
        return int(row["n"])


@pytest.fixture
def served(tmp_path, slack_api, slack_signer, agent_signer, monkeypatch):
    import bot.incidents

    async def no_diagnosis(services: Any, host: str, incident_id: int) -> None:
        return None

    monkeypatch.setattr(bot.incidents, "diagnosis_hook", no_diagnosis)
    settings = parse_settings(
        {
            "slack": {"channel": "C0ALERTS"},
            "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
            "hosts": {"prod-web-01": {"ssh": {"host": "127.0.0.1", "port": 9, "user": "u"}}},
        },
        "<fuzz>",
    )
    secrets = Secrets(
        slack_bot_token=slack_api.token,
        slack_signing_secret=slack_signer.secret,
        webhook_token=agent_signer.token,
        slack_api_url=slack_api.url,
    )
    svc = build_services(settings, secrets, tmp_path / "http-fuzz.db")
    svc.engine.timing = FAST
    bot = ThreadedBot(svc).start()
    yield bot
    bot.stop()
    svc.close()


HTTP_EXAMPLES = settings(FUZZ, max_examples=100)


def check_answer(bot: ThreadedBot, before: int, status: int, text: str, ok: set[int]) -> None:
    assert status < 500, (status, text)
    assert status in ok, (status, text)
    if 400 <= status < 500:
        assert bot.rejections() >= before + 1, (status, text)  # + late ones of followups


@HTTP_EXAMPLES
@given(body=agent_bodies.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))
def test_signed_agent_posts_are_200_or_an_audited_400(served, agent_signer, body: bytes) -> None:
    count("http-agent")
    before = served.rejections()
    status, text = served.post("/alerts/agent", *agent_signer.sign(body))
    check_answer(served, before, status, text, {200, 400})


@HTTP_EXAMPLES
@given(body=am_bodies.map(lambda v: json.dumps(v).encode()))
def test_alertmanager_posts_are_200_or_an_audited_400(served, agent_signer, body: bytes) -> None:
    count("http-alertmanager")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {agent_signer.token}"}
    before = served.rejections()
    status, text = served.post("/alerts/alertmanager", body, headers)
    check_answer(served, before, status, text, {200, 400})


@HTTP_EXAMPLES
@given(body=sns_messages.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))
def test_unsigned_sns_posts_are_an_audited_400_or_403(served, body: bytes) -> None:
    count("http-sns")
    before = served.rejections()
    status, text = served.post("/alerts/sns", body, {"Content-Type": "application/json"})
    check_answer(served, before, status, text, {400, 403})


@HTTP_EXAMPLES
@given(
    text=commands,
    user=st.sampled_from(["U0ALICE", "U0CAROL"]) | nasty_text,
    form=st.dictionaries(nasty_text, nasty_text, max_size=3),
)
def test_signed_slack_posts_are_answered_never_a_5xx(
    served, slack_signer, text: str, user: str, form: dict[str, str]
) -> None:
    count("http-slack")
    body = slack_signer.slash_command(text, user_id=user)
    if form:
        body += "&" + urllib.parse.urlencode(form)
    before = served.rejections()
    status, answer = served.post("/slack/events", body.encode(), slack_signer.headers(body))
    check_answer(served, before, status, answer, {200, 400})
