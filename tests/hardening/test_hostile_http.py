# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Hostile input over real HTTP, route by route: the right 4xx (or, for a signed slash
command, Slack's 200 with one ephemeral line), one ``auth.rejected`` / ``input.rejected`` audit
row, and nothing else anywhere — no table grows, no SSH connection at the sshd, no AWS request
at the moto server, no Slack call at the stand-in, no certificate fetched from a host that is
not allowed, and no sentinel file created by a smuggled shell command."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from helpers.signers import AgentSigner, SlackSigner
from intake_fixtures import TOPIC, _sns_keys, payload, sns_cert_server  # noqa: F401

from bot.intake import sns

JSON = {"Content-Type": "application/json"}
FORM = "application/x-www-form-urlencoded"
HUGE = 300 * 1024
DEEP = 50_000  # nesting levels; well inside the 256 KiB limit


@dataclass
class Case:
    name: str
    route: str
    body: bytes | str | dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    status: tuple[int, ...] = (400,)
    audit: str | None = "input.rejected"  # the one row expected, None for none
    method: str = "POST"
    allow: frozenset[str] = frozenset()
    slack_methods: frozenset[str] = frozenset()
    cert_fetch: bool = False
    followup: bool = False  # work continues after the ack: wait for it before counting
    reply: str | None = None  # text the answer must contain


@dataclass
class Tally:
    tried: int = 0
    failures: list[str] = field(default_factory=list)


TALLY = Tally()  # read by the README figures (printed with -s)


def deep_json(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_object(levels: int = DEEP) -> str:
    return '{"a":' * levels + "1" + "}" * levels


async def run_cases(bot: Any, cases: list[Case]) -> None:
    failures: list[str] = []
    for case in cases:
        snap = bot.snapshot()
        status, text = await bot.post(case.route, case.body, case.headers, method=case.method)
        if case.followup:
            await asyncio.sleep(0.05)
            await bot.settle()
        problems = []
        if status not in case.status:
            problems.append(f"status {status} (expected {case.status}): {text[:200]!r}")
        if status >= 500:
            problems.append("a 5xx")
        if case.reply is not None and case.reply not in text:
            replies = [c.args.get("text", "") for c in bot.slack.calls("response_url")]
            if not any(case.reply in r for r in replies):
                problems.append(f"no reply containing {case.reply!r}: {text[:200]!r}")
        if 400 <= status < 500 and "\n" in text.strip():
            problems.append(f"reason is not one line: {text[:200]!r}")
        rows = [r["action"] for r in bot.new_audit(snap)]
        if case.audit is None and rows:
            problems.append(f"unexpected audit rows {rows}")
        if case.audit is not None and case.audit not in rows:
            problems.append(f"no {case.audit} audit row (got {rows})")
        changed = bot.changes(
            snap,
            allow=case.allow,
            cert_fetch=case.cert_fetch,
            slack_methods=case.slack_methods,
        )
        if changed:
            problems.append(f"side effects {changed}")
        TALLY.tried += 1
        if problems:
            failures.append(f"{case.route} · {case.name}: " + "; ".join(problems))
    # Whatever may have been started in the background shows itself now.
    await bot.settle()
    late = bot.changes(
        bot.first_snapshot,
        allow=frozenset({"slack_deliveries"}),
        cert_fetch=True,
        slack_methods=frozenset({"response_url"}),
    )
    late.pop("tables", None)  # checked per case; the setup requests legitimately add rows
    late.pop("audit", None)
    if late:
        failures.append(f"late side effects after the whole matrix: {late}")
    TALLY.failures += failures
    assert not failures, "\n".join(failures)


# -- /alerts/agent -----------------------------------------------------------------------------


def agent_cases(signer: AgentSigner, sentinel: str) -> list[Case]:
    route = "/alerts/agent"
    good = signer.alert(host="prod-web-01")

    def signed(name: str, body: Any, **kw: Any) -> Case:
        raw, headers = signer.sign(body)
        return Case(name, route, raw, headers, **kw)

    def auth(name: str, raw: bytes, headers: dict[str, str]) -> Case:
        return Case(name, route, raw, headers, status=(401,), audit="auth.rejected")

    raw, headers = signer.sign(good)
    other_raw, _ = signer.sign(signer.alert(host="prod-db-01"))
    cases = [
        auth("unsigned", raw, dict(JSON)),
        auth("wrong key", *AgentSigner("not-the-key-0000").sign(good)),
        auth("signature of another body", other_raw, headers),
        auth("stale timestamp", *signer.sign(good, age=600)),
        auth("future timestamp", *signer.sign(good, age=-600)),
        auth("timestamp not a number", raw, {**headers, "X-Stabilize-Timestamp": "1e9"}),
        auth("empty signature", raw, {**headers, "X-Stabilize-Signature": ""}),
        auth("signature without prefix", raw, {**headers, "X-Stabilize-Signature": "0" * 64}),
        signed("malformed JSON", b'{"host": "prod-web-01",'),
        signed("not UTF-8", b'{"host": "\xff\xfe"}'),
        signed("JSON array", b"[]"),
        signed("JSON string", b'"prod-web-01"'),
        signed("JSON null", b"null"),
        signed("deeply nested JSON", deep_json()),
        signed("deeply nested details", f'{{"host":"prod-web-01","details":{deep_object()}}}'),
        signed("huge body", {**good, "summary": "x" * HUGE}),
        Case("huge unsigned body", route, b"x" * HUGE, dict(JSON)),
        signed("kind unknown", {**good, "kind": "rm -rf /"}),
        signed("severity unknown", {**good, "severity": "apocalyptic"}),
        signed("summary not a string", {**good, "summary": {"$(id)": 1}}),
        signed("details a list", {**good, "details": ["a"]}),
        signed("resolved a string", {**good, "resolved": "yes"}),
        signed("host missing", {k: v for k, v in good.items() if k != "host"}),
        signed("host a number", {**good, "host": 7}),
    ]
    for host in hostile_hosts(sentinel):
        cases.append(signed(f"host {host!r}", {**good, "host": host}))
    return cases


def hostile_hosts(sentinel: str) -> list[str]:
    """Host names that must never be accepted: unicode, control characters, shell syntax."""
    return [
        "",
        "prød-web-01",
        "prod-web-01\x00",
        "prod-web-01\n",
        "prod-web-01\r\nX-Injected: 1",
        "prod\u202eweb-01",
        "prod web 01",
        "-oProxyCommand=id",
        "prod-web-01;id",
        f"prod-web-01;touch {sentinel}/agent-semicolon",
        "prod-web-01|id",
        f"$(touch {sentinel}/agent-subshell)",
        f"`touch {sentinel}/agent-backtick`",
        "prod-web-01&&id",
        "prod-web-01>/etc/passwd",
        "../../etc/passwd",
        "a" * 64,
        "\ufeffprod-web-01",
        "ｐｒｏｄ-web-01",  # fullwidth letters  # noqa: RUF001
    ]


async def test_agent_route_refuses_every_hostile_request(hostile, agent_signer):
    # A valid alert first, so the replay below is a replay of something accepted.
    raw, headers = agent_signer.sign(agent_signer.alert(host="prod-web-01", kind="cpu_high"))
    status, text = await hostile.post("/alerts/agent", raw, headers)
    assert status == 200, text
    await hostile.settle()
    hostile.first_snapshot = hostile.snapshot()
    await run_cases(hostile, agent_cases(agent_signer, str(hostile.sentinel_dir)))


async def test_a_replayed_agent_body_is_refused(hostile, agent_signer):
    raw, headers = agent_signer.sign(agent_signer.alert(host="prod-web-01", kind="cpu_high"))
    status, text = await hostile.post("/alerts/agent", raw, headers)
    assert status == 200, text
    await hostile.settle()
    hostile.first_snapshot = hostile.snapshot()
    replay = Case("replayed body", "/alerts/agent", raw, headers, status=(401,),
                  audit="auth.rejected")  # fmt: skip
    await run_cases(hostile, [replay])


# -- /alerts/alertmanager -----------------------------------------------------------------------


async def test_alertmanager_route_refuses_every_hostile_request(hostile, agent_signer):
    route = "/alerts/alertmanager"
    token = agent_signer.token
    bearer = {**JSON, "Authorization": f"Bearer {token}"}
    good = payload("alertmanager_group.json")
    entry = good["alerts"][0]

    def body_with(**labels: Any) -> dict[str, Any]:
        return {**good, "alerts": [{**entry, "labels": {**entry["labels"], **labels}}]}

    def auth(name: str, headers: dict[str, str]) -> Case:
        return Case(name, route, good, headers, status=(401,), audit="auth.rejected")

    sentinel = str(hostile.sentinel_dir)
    hostile.first_snapshot = hostile.snapshot()
    cases = [
        auth("no Authorization", dict(JSON)),
        auth("wrong token", {**JSON, "Authorization": "Bearer wrong-token"}),
        auth("token with a suffix", {**JSON, "Authorization": f"Bearer {token}x"}),
        auth("token prefix only", {**JSON, "Authorization": f"Bearer {token[:-1]}"}),
        auth("Basic scheme", {**JSON, "Authorization": f"Basic {token}"}),
        auth("Bearer and nothing", {**JSON, "Authorization": "Bearer "}),
        Case("malformed JSON", route, b'{"alerts": [', bearer),
        Case("not UTF-8", route, b'{"alerts": "\xff"}', bearer),
        Case("form body", route, "alerts=1&version=4", {**bearer, "Content-Type": FORM}),
        Case("JSON array", route, b"[]", bearer),
        Case("alerts not a list", route, {**good, "alerts": {"a": 1}}, bearer),
        Case("version 3", route, {**good, "version": "3"}, bearer),
        Case("1001 alerts", route, {**good, "alerts": [entry] * 1001}, bearer),
        Case("entry without labels", route, {**good, "alerts": [{"status": "firing"}]}, bearer),
        Case("bad status", route, {**good, "alerts": [{**entry, "status": "$(id)"}]}, bearer),
        Case("no alertname", route, body_with(alertname=""), bearer),
        Case("deeply nested JSON", route, deep_json(), bearer),
        Case("deeply nested labels", route, f'{{"alerts":[{{"labels":{deep_object()}}}]}}', bearer),
        Case("huge body", route, {**good, "pad": "x" * HUGE}, bearer),
    ]
    for host in hostile_hosts(sentinel):
        if host.strip() == "prod-web-01":
            continue  # labels are trimmed on purpose: that one is prod-web-01 itself
        labels = {"instance": f"{host}:9100", "host": host, "nodename": host}
        cases.append(Case(f"host {host!r}", route, body_with(**labels), bearer))
    await run_cases(hostile, cases)


# -- /alerts/sns -------------------------------------------------------------------------------


async def test_sns_route_refuses_every_forged_or_malformed_message(hostile):
    route = "/alerts/sns"
    signer = hostile.certs.signer
    alarm = payload("cloudwatch_cpu_alarm.json")
    good = signer.sign(signer.notification(alarm))
    port = signer.base_url.rsplit(":", 1)[1]

    def forged(name: str, message: dict[str, Any], *, fetch: bool = False) -> Case:
        return Case(
            name, route, message, dict(JSON), status=(403,), audit="auth.rejected", cert_fetch=fetch
        )

    def bad(name: str, body: Any, headers: dict[str, str] = JSON) -> Case:
        return Case(name, route, body, dict(headers))

    def signed_with(**kw: Any) -> dict[str, Any]:
        topic = kw.pop("topic", TOPIC)
        return signer.sign(signer.notification(alarm, topic=topic), **kw)

    evil_host = "https://sns.us-east-1.amazonaws.com.evil.example/c.pem"
    other_name = f"http://localhost:{port}/SimpleNotificationService-test.pem"
    userinfo = f"http://evil@127.0.0.2:{port}/x.pem"
    attacker = signer.sign(signer.subscription(subscribe_url="https://attacker.example/c?T=1"))
    deep_message = f'{{"Type":"Notification","Message":{deep_object()}}}'
    hostile.first_snapshot = hostile.snapshot()
    cases = [
        forged(
            "message changed after signing", {**good, "Message": good["Message"] + " "}, fetch=True
        ),
        forged("signed with another key", signed_with(key=signer.other_key), fetch=True),
        forged("signature not base64", {**good, "Signature": "%%%"}, fetch=True),
        forged("empty signature", {**good, "Signature": ""}, fetch=True),
        forged("v1 signature claimed as v2", {**good, "SignatureVersion": "2"}, fetch=True),
        forged("SignatureVersion 3", {**good, "SignatureVersion": "3"}),
        forged("cert on a look-alike host", signed_with(cert_url=evil_host)),
        forged("cert over http on another name", signed_with(cert_url=other_name)),
        forged("cert URL with userinfo", signed_with(cert_url=userinfo)),
        forged("disallowed topic", signed_with(topic=TOPIC.replace("alarms", "other"))),
        forged("subscription to another host", attacker, fetch=True),
        bad("malformed JSON", b'{"Type": "Notification",'),
        bad("JSON array", b"[]"),
        bad("unknown Type", {**good, "Type": "Nope"}),
        bad("Type a list", {**good, "Type": []}),
        bad("MessageId missing", {k: v for k, v in good.items() if k != "MessageId"}),
        bad("Subject a number", {**good, "Subject": 7}),
        bad("deeply nested JSON", deep_json()),
        bad("deeply nested message", deep_message),
        bad("huge body", {**good, "Message": "x" * HUGE}),
        bad("form body", "Type=Notification", {"Content-Type": FORM}),
    ]
    # Signed and verified, but the alarm inside is not one we can use.
    deep_alarm = json.dumps({"AlarmName": "x", "NewStateValue": "ALARM", "Trigger": "T"})
    for name, message in [
        ("message not JSON", "hello"),
        ("message a deep JSON", deep_alarm.replace('"T"', deep_object(20_000))),
        ("alarm without a name", json.dumps({**alarm, "AlarmName": None})),
        ("alarm with a bad state", json.dumps({**alarm, "NewStateValue": "$(id)"})),
    ]:
        signed = signer.sign({**signer.notification(alarm), "Message": message})
        cases.append(Case(name, route, signed, dict(JSON), cert_fetch=True))
    await run_cases(hostile, cases)


def test_the_default_certificate_pattern_refuses_http_and_lookalike_hosts(settings_factory):
    from types import SimpleNamespace

    services = SimpleNamespace(settings=settings_factory())
    allowed = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"
    assert sns.url_allowed(services, allowed)
    for url in [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "file:///etc/ssl/cert.pem",
    ]:
        assert not sns.url_allowed(services, url), url


# -- /slack/events -----------------------------------------------------------------------------


def slack_cases(signer: SlackSigner, sentinel: str) -> list[Case]:
    route = "/slack/events"
    help_body = signer.slash_command("help")

    def auth(name: str, body: str | bytes, headers: dict[str, str]) -> Case:
        return Case(name, route, body, headers, status=(401,), audit="auth.rejected")

    def signed(name: str, body: str | bytes, **kw: Any) -> Case:
        content_type = kw.pop("content_type", FORM)
        return Case(name, route, body, signer.headers(body, content_type=content_type), **kw)

    good = signer.headers(help_body)
    other = SlackSigner("0" * 32, response_url=lambda: "http://127.0.0.1:9/")
    cases = [
        auth("unsigned", help_body, {"Content-Type": FORM}),
        auth("wrong signing secret", help_body, other.headers(help_body)),
        auth("stale timestamp", help_body, signer.headers(help_body, age=400)),
        auth("future timestamp", help_body, signer.headers(help_body, age=-400)),
        auth("timestamp not a number", help_body, {**good, "X-Slack-Request-Timestamp": "now"}),
        auth("signature v1", help_body, {**good, "X-Slack-Signature": "v1=" + "0" * 64}),
        auth("signature of another body", signer.slash_command("run add-swap prod-web-01"), good),
        signed("form that does not parse", "a=%zz&&=&b"),
        signed("neither command nor payload", "text=hi&user_id=U0ALICE"),
        signed("not UTF-8", b"command=%2Fstabilize&text=\xff\xfe"),
        signed("payload not JSON", "payload=%7Bnot-json"),
        signed("payload a JSON array", "payload=%5B%5D"),
        signed("payload deeply nested", b"payload=" + deep_json()),
        signed("JSON without type", "{}", content_type="application/json"),
        signed("JSON deeply nested", deep_json(), content_type="application/json"),
        signed("text/plain", "command=/stabilize&text=help", content_type="text/plain"),
        signed("multipart", "--x\r\n\r\n--x--", content_type="multipart/form-data; boundary=x"),
        signed("huge body", help_body + "&pad=" + "x" * HUGE, status=(400, 413)),
        signed("user id with shell syntax", signer.slash_command("help", user_id="U0A;id")),
        signed("user id unicode", signer.slash_command("help", user_id="U0ÄLICE")),
    ]
    # Signed slash commands whose *text* is hostile: Slack wants a 200 with the reply.
    s = sentinel
    texts = [
        f"run add-swap prod-web-01 path=/swapfile;touch${{IFS}}{s}/slash-1",
        f"run add-swap prod-web-01 size=4G|touch${{IFS}}{s}/slash-2",
        f"run add-swap prod-web-01$(touch${{IFS}}{s}/slash-3)",
        f"run add-swap `touch${{IFS}}{s}/slash-4` size=4G",
        f"run add-swap prod-web-01 fstab=/etc/fstab;touch${{IFS}}{s}/slash-5",
        f"run add-swap prod-web-01 path=/swap$(touch${{IFS}}{s}/slash-6)",
        "run add-swap prod-web-01 path=/swap\nid",
        "run add-swap prod-web-01 size=4G&&reboot",
        "run add-swap prod-web-01 size=99G",
        "run add-swap prod-web-01 size=4G size=8G",
        "run add-swap prod-web-01 pa\u202eth=/x",
        "run add-swap prod-web-01 size=4G\x00",
        "run add-swap prød-web-01",
        "run add-swap prod-web-01 =4G",
        "run resize-instance prod-web-01 type=t3.large;reboot",
        "run scale-asg prod-web-01 by=+1&&id",
        "run ../../etc/passwd prod-web-01",
        "run add-swap",
        f"prod-web-01;touch${{IFS}}{s}/slash-7",
        f"$(touch${{IFS}}{s}/slash-8)",
        "prod-web-01 extra words",
        "audit $(id)",
        "audit prod-web-01 24h;id",
        "audit a b c",
        "audit 100000000d",
        "audit 99999999999999999999w",
        "\x1b[31mprod-web-01",
    ]
    for text in texts:
        cases.append(
            signed(
                f"command {text!r}",
                signer.slash_command(text),
                status=(200,),
                allow=frozenset({"slack_deliveries"}),
                slack_methods=frozenset({"response_url"}),
                followup=True,
            )
        )
    # Clicks on buttons that carry hostile values.
    for action_id, value in [
        ("approve", "R-0000000000"),
        ("approve", "'; DROP TABLE requests; --"),
        ("reject", "R-0000000000\nR-1111111111"),
        ("approve", "$(touch /tmp/x)"),
        ("recommend_1", "../../etc/passwd"),
        ("recommend_1", "999999"),
        ("shutdown_everything", "1"),
    ]:
        cases.append(
            signed(
                f"click {action_id}={value!r}",
                signer.block_actions(action_id, value),
                status=(200,),
                allow=frozenset({"slack_deliveries"}),
                slack_methods=frozenset({"response_url"}),
                followup=True,
            )
        )
    return cases


async def test_slack_route_refuses_every_hostile_request(hostile, slack_signer):
    # Something genuine first: its replay below must change nothing.
    body = slack_signer.slash_command("help")
    headers = slack_signer.headers(body)
    status, text = await hostile.post("/slack/events", body, headers)
    assert status == 200 and ("Usage" in text or "stabilize" in text), text
    await hostile.settle()
    hostile.first_snapshot = hostile.snapshot()
    replay = Case("replayed body (a Slack retry)", "/slack/events", body, headers,
                  status=(200,), audit=None)  # fmt: skip
    await run_cases(hostile, [replay, *slack_cases(slack_signer, str(hostile.sentinel_dir))])


# -- /healthz, /metrics and anything else --------------------------------------------------------


async def test_wrong_methods_unknown_routes_and_garbage_change_nothing(hostile):
    hostile.first_snapshot = hostile.snapshot()
    cases = [
        Case("POST /healthz", "/healthz", b"{}", dict(JSON), status=(405,), audit=None),
        Case("PUT /metrics", "/metrics", b"x", {}, status=(405,), audit=None, method="PUT"),
        Case(
            "DELETE /alerts/agent",
            "/alerts/agent",
            b"",
            {},
            status=(405,),
            audit=None,
            method="DELETE",
        ),  # fmt: skip
        Case(
            "GET /slack/events", "/slack/events", b"", {}, status=(405,), audit=None, method="GET"
        ),  # fmt: skip
        Case("GET /alerts/sns", "/alerts/sns", b"", {}, status=(405,), audit=None, method="GET"),
        Case("unknown route", "/admin", b"", {}, status=(404,), audit=None, method="GET"),
        Case(
            "path traversal",
            "/alerts/../../etc/passwd",
            b"",
            {},
            status=(404,),
            audit=None,
            method="GET",
        ),  # fmt: skip
        Case(
            "GET /healthz with a garbage query",
            "/healthz?x=%00%ff;$(id)",
            b"",
            {},
            status=(200,),
            audit=None,
            method="GET",
        ),  # fmt: skip
        Case(
            "GET /metrics with a body",
            "/metrics",
            b"\x00" * 1024,
            {},
            status=(200,),
            audit=None,
            method="GET",
        ),  # fmt: skip
    ]
    await run_cases(hostile, cases)
    # Bytes that are not HTTP at all, straight onto the socket.
    host, port = hostile.url.removeprefix("http://").split(":")
    for garbage in [
        b"GARBAGE\r\n\r\n",
        b"POST /alerts/agent HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /alerts/agent HTTP/1.1\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ]:
        snap = hostile.snapshot()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(garbage)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
        assert answer == b"" or answer.split(b" ", 2)[1].startswith(b"4"), (garbage, answer)
        assert hostile.changes(snap) == {}
        TALLY.tried += 1


# -- the same cases against a real `stabilize serve` process ---------------------------------------


async def test_a_real_serve_process_spawns_nothing_and_stores_nothing_for_hostile_input(
    tmp_path, stabilize_env, slack_signer, agent_signer, sshd, slack_api
):
    """Across the process boundary: the server never forks a child (no shell, no ssh binary),
    never connects to the host, stores no incident or request, and its chain verifies."""
    import os
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    import aiohttp
    from helpers import free_port, wait_for_port, write_config
    from helpers.sshd import _children_of

    write_config(
        tmp_path,
        {
            "slack": {"channel": "C0ALERTS"},
            "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
            "hosts": {"prod-web-01": sshd.host_config()},
        },
    )
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    port = free_port()
    stabilize = Path(sys.executable).parent / "stabilize"
    mark = sshd.mark()
    proc = subprocess.Popen(
        [str(stabilize), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **stabilize_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cases = agent_cases(agent_signer, str(sentinel)) + slack_cases(slack_signer, str(sentinel))
    wrong: list[str] = []
    children: set[int] = set()
    try:
        wait_for_port(port, timeout=30, alive=lambda: proc.poll() is None)
        async with aiohttp.ClientSession() as session:
            for case in cases:
                data = json.dumps(case.body).encode() if isinstance(case.body, dict) else case.body
                async with session.post(
                    f"http://127.0.0.1:{port}{case.route}", data=data, headers=case.headers
                ) as resp:
                    await resp.read()
                    if resp.status not in case.status:
                        wrong.append(f"{case.name}: {resp.status}")
                children.update(_children_of(proc.pid))
                TALLY.tried += 1
        await asyncio.sleep(1.0)  # the work after the acks
        children.update(_children_of(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert not wrong, wrong
    assert not children, f"stabilize serve started child processes: {children}"
    assert sshd.connections(mark) == 0
    assert list(sentinel.iterdir()) == []
    assert [c.method for c in slack_api.calls() if c.method.startswith("chat.")] == []
    conn = sqlite3.connect(stabilize_env["STABILIZE_DB"])
    try:
        for table in ("incidents", "alerts", "requests", "executions"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        actions = {r[0] for r in conn.execute("SELECT DISTINCT action FROM audit_events")}
        assert actions <= {"auth.rejected", "input.rejected"}, actions
    finally:
        conn.close()
    verify = subprocess.run(
        [str(stabilize), "audit", "verify"],
        env={**os.environ, **stabilize_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
