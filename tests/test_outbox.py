"""The persisted outbox against the Slack stand-in: order, pacing, coalescing, retries, and
never a duplicate post."""

from __future__ import annotations

import pytest

from bot.config import Secrets
from bot.db import Database
from bot.outbox import Outbox
from bot.transport import SlackTransport, make_web_client


def slack(slack_api) -> SlackTransport:
    secrets = Secrets(slack_bot_token=slack_api.token, slack_api_url=slack_api.url)
    return SlackTransport(make_web_client(secrets))


@pytest.fixture
def outbox(tmp_db, slack_api):
    return Outbox(tmp_db, slack(slack_api), post_interval=0.2, update_interval=0.5)


def texts(slack_api, method):
    return [c.args["text"] for c in slack_api.calls(method)]


async def test_updates_queued_before_the_post_go_out_as_one_post(outbox, slack_api):
    outbox.post("incident:1", "C0ALERTS", "count 1")
    for n in range(2, 51):
        outbox.update("incident:1", f"count {n}")
    assert await outbox.drain(10)
    assert texts(slack_api, "chat.postMessage") == ["count 50"]
    assert slack_api.calls("chat.update") == []


async def test_a_storm_of_updates_is_coalesced_to_one_per_interval(outbox, slack_api):
    outbox.post("incident:1", "C0ALERTS", "count 1")
    assert await outbox.drain(10)
    for n in range(2, 201):
        outbox.update("incident:1", f"count {n}")
        if n % 20 == 0:
            await outbox.deliver_due()
    assert await outbox.drain(10)
    updates = slack_api.calls("chat.update")
    assert updates[-1].args["text"] == "count 200"
    assert len(updates) < 10
    gaps = [b.time - a.time for a, b in zip(updates, updates[1:], strict=False)]
    assert all(gap >= 0.45 for gap in gaps), gaps
    [message] = slack_api.messages("C0ALERTS")
    assert message["text"] == "count 200"


async def test_posts_keep_their_order_per_channel_and_are_paced(outbox, slack_api):
    for n in range(4):
        outbox.post(f"m:{n}", "C0ALERTS", f"alerts {n}")
    outbox.post("other:0", "C0OTHER", "other 0")
    assert await outbox.drain(10)
    posts = [c for c in slack_api.calls("chat.postMessage") if c.args["channel"] == "C0ALERTS"]
    assert [c.args["text"] for c in posts] == [f"alerts {n}" for n in range(4)]
    gaps = [b.time - a.time for a, b in zip(posts, posts[1:], strict=False)]
    assert all(gap >= 0.18 for gap in gaps), gaps
    assert texts(slack_api, "chat.postMessage").count("other 0") == 1


async def test_a_429_is_retried_after_retry_after_and_posted_once(outbox, slack_api):
    slack_api.fail_next(1, status=429, retry_after=1, method="chat.postMessage")
    outbox.post("incident:1", "C0ALERTS", "hello")
    assert await outbox.drain(10)
    first, second = slack_api.calls("chat.postMessage")
    assert first.status == 429 and second.ok
    assert second.time - first.time >= 1.0
    assert len(slack_api.messages("C0ALERTS")) == 1


async def test_5xx_backs_off_and_delivers_later(outbox, slack_api):
    slack_api.fail_next(2, status=503, method="chat.postMessage")
    outbox.post("incident:1", "C0ALERTS", "hello")
    assert await outbox.drain(20)
    assert len(slack_api.messages("C0ALERTS")) == 1
    assert slack_api.calls("chat.postMessage")[-1].ok


async def test_a_post_slack_accepted_before_a_crash_is_not_posted_again(tmp_db, slack_api, outbox):
    # Slack accepted the post, then the bot died before recording the ts: the row is still
    # pending with one attempt counted.
    transport = slack(slack_api)
    ts = await transport.post(
        "C0ALERTS",
        "INC-7 firing",
        metadata={"event_type": "stabilize_message", "event_payload": {"key": "incident:7"}},
    )
    outbox.post("incident:7", "C0ALERTS", "INC-7 firing")
    tmp_db.conn.execute("UPDATE outbox SET attempts = 1")
    outbox.update("incident:7", "INC-7 firing, 2 alerts")
    assert await outbox.drain(10)
    assert len(slack_api.calls("chat.postMessage")) == 1  # only the one before the crash
    assert slack_api.calls("conversations.history")
    assert outbox.message("incident:7")["ts"] == ts
    [message] = slack_api.messages("C0ALERTS")
    assert message["text"] == "INC-7 firing, 2 alerts"


async def test_a_permanent_failure_does_not_block_its_channel(outbox, slack_api):
    slack_api.fail_next(1, status=200, error="msg_too_long", method="chat.postMessage")
    outbox.post("incident:1", "C0ALERTS", "too long")
    outbox.post("diagnosis:1", "C0ALERTS", "in the thread", thread_key="incident:1")
    outbox.update("incident:1", "still too long")
    outbox.post("incident:2", "C0ALERTS", "next incident")
    assert await outbox.drain(10)
    assert [m["text"] for m in slack_api.messages("C0ALERTS")] == ["next incident"]
    failed = {row["key"]: row["error"] for row in outbox.failed()}
    assert "msg_too_long" in failed["incident:1"]
    assert "thread parent" in failed["diagnosis:1"]
    assert set(failed) == {"incident:1", "diagnosis:1"}


async def test_pending_rows_survive_a_restart(tmp_path, slack_api):
    db = Database(tmp_path / "restart.db")
    Outbox(db).post("incident:1", "C0ALERTS", "queued before the restart")
    db.close()
    again = Database(tmp_path / "restart.db")
    try:
        outbox = Outbox(again, slack(slack_api), post_interval=0.2)
        assert outbox.pending() == 1
        assert await outbox.drain(10)
        assert texts(slack_api, "chat.postMessage") == ["queued before the restart"]
    finally:
        again.close()
