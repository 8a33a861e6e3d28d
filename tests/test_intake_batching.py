# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Group commit of the alert routes: requests that arrive over a few loop passes share one
transaction; the WAL is checkpointed off the event loop; metrics keep their children."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from intake_fixtures import diagnoses, services  # noqa: F401

import bot.intake.batching as batching
from bot.config import Secrets
from bot.db import AUTOCHECKPOINT_PAGES
from bot.intake.model import Alert
from bot.server import wal_checkpoints
from bot.services import build_services


def alert(n: int, host: str = "prod-web-01") -> Alert:
    return Alert("agent", host, "memory_pressure", summary=f"#{n}", external_id=f"sig-{n}")


@pytest.fixture
def batches(monkeypatch):
    """The number of requests in each transaction the batcher commits."""
    sizes: list[int] = []
    commit = batching._commit_batch

    def recording(services, batch):
        sizes.append(len(batch))
        return commit(services, batch)

    monkeypatch.setattr(batching, "_commit_batch", recording)
    return sizes


async def test_requests_ready_over_successive_loop_passes_share_one_transaction(
    services, batches, diagnoses
):
    async def request(n: int, passes: int):
        for _ in range(passes):  # its bytes arrive this many loop passes after the first's
            await asyncio.sleep(0)
        return await batching.accept_async(services, [alert(n)])

    results = await asyncio.gather(*(request(n, n) for n in range(4)))
    assert batches == [4]
    assert [r[0].result for r in results] == ["opened"] + ["deduplicated"] * 3
    assert services.db.query_one("SELECT count FROM incidents")["count"] == 4


async def test_a_lone_request_is_committed_after_a_few_quiet_passes(services, batches, diagnoses):
    first = await batching.accept_async(services, [alert(1)])
    second = await batching.accept_async(services, [alert(2, host="prod-web-02")])
    assert batches == [1, 1]
    assert [first[0].result, second[0].result] == ["opened", "opened"]


async def test_one_transaction_gives_its_alerts_and_audit_rows_one_timestamp(services, diagnoses):
    await asyncio.gather(*(batching.accept_async(services, [alert(n)]) for n in range(3)))
    stamps = services.db.query("SELECT DISTINCT received_at FROM alerts")
    audit = {r["ts"] for r in services.audit.list()}
    assert len(stamps) == 1 and audit == {stamps[0]["received_at"]}
    assert services.audit.verify().ok


async def test_wal_checkpoints_run_in_a_worker_thread_not_on_the_loop(services, monkeypatch):
    loop_thread = threading.get_ident()
    threads: list[int] = []
    checkpoint = services.db.checkpoint

    def recording():
        threads.append(threading.get_ident())
        return checkpoint()

    monkeypatch.setattr(services.db, "checkpoint", recording)
    services.audit.append("system", "execution.step", detail={"n": 1})
    job = asyncio.create_task(wal_checkpoints(services, every=0.01))
    while len(threads) < 2:
        await asyncio.sleep(0.01)
    pages = services.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert loop_thread not in threads
    assert pages > AUTOCHECKPOINT_PAGES  # commits on the loop only checkpoint as a last resort
    restored = services.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert restored == AUTOCHECKPOINT_PAGES


async def test_stopping_the_checkpoint_job_waits_for_a_checkpoint_in_its_thread(
    services, monkeypatch
):
    # Closing the database under a running checkpoint crashes the process (seen in CI):
    # the job must not end before its thread has.
    started, finished = threading.Event(), threading.Event()
    checkpoint = services.db.checkpoint

    def slow():
        started.set()
        time.sleep(0.3)
        result = checkpoint()
        finished.set()
        return result

    monkeypatch.setattr(services.db, "checkpoint", slow)
    job = asyncio.create_task(wal_checkpoints(services, every=0.01))
    while not started.is_set():
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert finished.is_set()


def test_metrics_inc_counts_like_labels_inc(services):
    metrics = services.metrics
    metrics.inc(metrics.alerts, "agent", "opened")
    metrics.inc(metrics.alerts, "agent", "opened")
    metrics.alerts.labels("agent", "opened").inc()
    text = metrics.render()[0].decode()
    assert 'stabilize_alerts_total{outcome="opened",source="agent"} 3.0' in text


def test_the_replay_guard_forgets_ids_whose_timestamp_left_the_window_and_stays_bounded():
    from bot.errors import AuthError
    from bot.intake.agent import WINDOW, ReplayGuard

    guard = ReplayGuard(limit=3)
    now = 1_800_000_000
    for n in range(5):
        guard.check(f"{now}:sig-{n}", now)
    assert list(guard.ids) == ["sig-2", "sig-3", "sig-4"]
    with pytest.raises(AuthError, match="replayed"):
        guard.check(f"{now}:sig-4", now + WINDOW)  # still inside the window
    guard.check(f"{now + WINDOW}:sig-5", now + WINDOW + 2)  # the others' timestamps left it
    assert list(guard.ids) == ["sig-5"]
    guard.forget(f"{now + WINDOW}:sig-5")  # not stored: the sender may send it again
    guard.check(f"{now + WINDOW}:sig-5", now + WINDOW + 2)


def test_a_restarted_guard_reloads_the_agent_ids_of_the_last_window(settings_factory, tmp_path):
    import time

    from bot.errors import AuthError
    from bot.incidents import accept
    from bot.intake import agent

    now = time.time()
    fresh, old = f"{int(now) - 5}:sha256=fresh", f"{int(now) - 3600}:sha256=old"
    first = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    accept(first, [Alert("agent", "web-1", "oom_kill", external_id=old)])
    first.db.conn.execute(  # stored long ago, as far as the table says
        "UPDATE alerts SET received_at = '2000-01-01T00:00:00.000000Z'"
    )
    accept(first, [Alert("agent", "web-1", "oom_kill", external_id=fresh)])
    accept(first, [Alert("alertmanager", "web-1", "HostOutOfMemory", external_id="fp-1")])
    first.close()
    restarted = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    try:
        with pytest.raises(AuthError, match="replayed"):
            agent.check_replay(restarted, fresh, now=now)
        assert list(agent.replay_guard(restarted).ids) == ["sha256=fresh"]
    finally:
        restarted.close()


def test_an_agent_alert_stored_under_its_bare_signature_cannot_be_replayed(
    settings_factory, tmp_path
):
    """Before ids carried the timestamp, agent alerts were stored under the signature alone."""
    import time

    from bot.errors import AuthError
    from bot.incidents import accept
    from bot.intake import agent

    now = time.time()
    first = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    accept(first, [Alert("agent", "web-1", "oom_kill", external_id="sha256=before")])
    first.close()
    upgraded = build_services(settings_factory(), Secrets(), tmp_path / "s.db", slack=False)
    try:
        with pytest.raises(AuthError, match="replayed"):
            agent.check_replay(upgraded, f"{int(now) - 10}:sha256=before", now=now)
        agent.check_replay(upgraded, f"{int(now) - 10}:sha256=after", now=now)
    finally:
        upgraded.close()
