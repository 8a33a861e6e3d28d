"""What reaches /slack/events without Slack's signature, or not in Slack's shape, changes
nothing: a one-line 401/400 and an `auth.rejected` / `input.rejected` audit row."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from slack_fixtures import slack_bot_fixture  # noqa: F401  (provides `slack_bot`)

from bot import approvals

PAYLOADS = Path(__file__).parent / "payloads" / "slack"


def payload(name: str, **replace: str) -> str:
    text = (PAYLOADS / name).read_text()
    for key, value in replace.items():
        text = text.replace(key, value)
    return SlackSignerBody.form(json.loads(text))


class SlackSignerBody:
    @staticmethod
    def form(data: dict) -> str:
        return urlencode({"payload": json.dumps(data)})


def assert_nothing_but(bot, action: str) -> dict:
    rows = bot.services.audit.list()
    assert [r["action"] for r in rows] == [action], rows
    assert bot.api.calls() == []  # not even Bolt's auth.test: Bolt never saw it
    assert approvals.list_requests(bot.services) == []
    return rows[0]


@pytest.mark.parametrize(
    "case",
    ["missing", "stale", "future", "wrong secret", "tampered", "garbage timestamp"],
)
async def test_unsigned_or_badly_signed_requests_are_401_and_audited(slack_bot, case):
    bot = await slack_bot()
    body = bot.signer.slash_command("run add-swap prod-web-01 size=2G", user_id="U0ALICE")
    headers = bot.signer.headers(body)
    if case == "missing":
        headers = {"Content-Type": headers["Content-Type"]}
    elif case == "stale":
        headers = bot.signer.headers(body, age=600)
    elif case == "future":
        headers = bot.signer.headers(body, age=-600)
    elif case == "wrong secret":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif case == "tampered":
        body = body.replace("size%3D2G", "size%3D64G")
    elif case == "garbage timestamp":
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    answer = await bot.post(body, headers)
    assert answer.status == 401
    assert answer.text.count("\n") == 1 and len(answer.text) < 200
    row = assert_nothing_but(bot, "auth.rejected")
    assert row["actor"] == "system"
    assert bot.services.secrets.slack_signing_secret not in json.dumps(row)


async def test_stale_reason_names_the_fix(slack_bot):
    bot = await slack_bot()
    body = bot.signer.slash_command("help")
    answer = await bot.post(body, bot.signer.headers(body, age=301))
    assert answer.status == 401 and "check the server clock" in answer.text


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        ("payload=%7Bnot+json", "application/x-www-form-urlencoded", "malformed payload JSON"),
        ("payload=%5B1%2C2%5D", "application/x-www-form-urlencoded", "not a Slack interaction"),
        ("hello=world", "application/x-www-form-urlencoded", "no 'command' or 'payload'"),
        ("a=1&&&=", "application/x-www-form-urlencoded", "no 'command' or 'payload'"),
        ("{not json", "application/json", "malformed JSON body"),
        ("<xml/>", "text/xml", "unsupported content type"),
        (b"command=%2Fstabilize&user_id=U0ALICE&text=\xff", None, "not UTF-8"),
        ("command=%2Fstabilize&user_id=nobody&text=help", None, "no valid user_id"),
    ],
)
async def test_malformed_but_signed_bodies_are_400_one_line(slack_bot, body, content_type, reason):
    bot = await slack_bot()
    raw = body if isinstance(body, bytes) else body.encode()
    headers = bot.signer.headers(
        raw, content_type=content_type or "application/x-www-form-urlencoded"
    )
    answer = await bot.post(raw, headers)
    assert answer.status == 400
    assert reason in answer.text and answer.text.count("\n") == 1
    row = assert_nothing_but(bot, "input.rejected")
    assert reason in row["detail"]


async def test_a_recorded_click_payload_is_understood(slack_bot):
    bot = await slack_bot()
    request = await bot.ask(user="U0CAROL")
    body = payload(
        "block_actions_approve.json",
        REQUEST_ID=request.id,
        RESPONSE_URL=bot.api.response_url(),
    )
    answer = await bot.post(body, bot.signer.headers(body))
    assert answer.status == 200
    await bot.settle()
    assert [j.request_id for j in bot.engine.executed] == [request.id]


async def test_interactions_we_do_not_handle_are_acked_quietly(slack_bot):
    bot = await slack_bot()
    body = payload("view_submission.json")
    answer = await bot.post(body, bot.signer.headers(body))
    assert answer.status == 200
    await bot.settle()
    assert bot.api.messages() == []
    assert bot.services.audit.list() == []


async def test_url_verification_is_answered(slack_bot):
    bot = await slack_bot()
    body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "x"})
    answer = await bot.post(body, bot.signer.headers(body, content_type="application/json"))
    assert answer.status == 200 and "c-123" in answer.text
