"""The audit log is append-only and hash-chained: concurrent writers cannot fork it, and any
edit, removal or truncation is named by ``verify`` and ``stabilize audit verify``."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.audit import GENESIS, AuditLog, Event
from bot.db import Database
from bot.errors import StabilizeError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def audit(tmp_db):
    return AuditLog(tmp_db)


def fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        audit.append("system", "execution.step", host="prod-web-01", detail={"step": i})


def raw(db: Database) -> sqlite3.Connection:
    """A plain sqlite3 connection, as somebody tampering with the file would use."""
    conn = sqlite3.connect(db.path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def drop_triggers(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("DROP TRIGGER audit_events_no_delete")


def rows(db: Database) -> list[dict]:
    return db.query("SELECT * FROM audit_events ORDER BY id")


def assert_one_chain(db: Database, expected: int) -> None:
    all_rows = rows(db)
    assert [r["id"] for r in all_rows] == list(range(1, expected + 1))
    # A fork would show as two rows claiming the same predecessor.
    assert len({r["prev_hash"] for r in all_rows}) == expected
    assert all_rows[0]["prev_hash"] == GENESIS
    for before, after in zip(all_rows, all_rows[1:], strict=False):
        assert after["prev_hash"] == before["hash"]


# -- concurrency -------------------------------------------------------------------------


def test_eight_threads_appending_keep_one_intact_chain(audit, tmp_db):
    per_thread, threads = 1000, 8
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                audit.append("system", "execution.step", detail={"thread": n, "i": i})
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    result = audit.verify()
    assert result.ok, str(result)
    assert result.checked == per_thread * threads
    assert_one_chain(tmp_db, per_thread * threads)


def _append_in_process(path: str, n: int, start: object) -> None:
    db = Database(path)
    log = AuditLog(db)
    start.wait()  # type: ignore[attr-defined]
    for i in range(n):
        log.append("system", "execution.step", detail={"pid": os.getpid(), "i": i})
    db.close()


def test_two_processes_appending_at_once_keep_one_intact_chain(audit, tmp_db):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_in_process, args=(str(tmp_db.path), 500, start))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    result = audit.verify()
    assert result.ok, str(result)
    assert_one_chain(tmp_db, 1000)
    per_pid: dict[int, int] = {}
    for r in rows(tmp_db):
        pid = json.loads(r["detail"])["pid"]
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert sorted(per_pid.values()) == [500, 500]


def test_the_database_is_in_wal_mode(audit, tmp_db):
    fill(audit, 1)
    with raw(tmp_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- append-only ---------------------------------------------------------------------------


def test_update_and_delete_are_refused_while_the_triggers_exist(audit, tmp_db):
    fill(audit, 3)
    conn = raw(tmp_db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_events SET detail = '{}' WHERE id = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_events WHERE id = 3")
    conn.close()
    assert len(rows(tmp_db)) == 3
    assert audit.verify().ok


def test_an_altered_detail_is_named_by_verify(audit, tmp_db):
    fill(audit, 10)
    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("""UPDATE audit_events SET detail = '{"step":999}' WHERE id = 6""")
    conn.close()
    result = audit.verify()
    assert not result.ok
    assert result.broken_id == 6
    assert "6" in str(result)


def test_an_altered_row_with_a_recomputed_hash_breaks_the_next_link(audit, tmp_db):
    from bot.audit import row_hash

    fill(audit, 10)
    conn = raw(tmp_db)
    drop_triggers(conn)
    row = dict(conn.execute("SELECT * FROM audit_events WHERE id = 4").fetchone())
    row["actor"] = "U0MALLORY"
    conn.execute(
        "UPDATE audit_events SET actor = ?, hash = ? WHERE id = 4", (row["actor"], row_hash(row))
    )
    conn.close()
    result = audit.verify()
    assert not result.ok
    assert result.broken_id == 5


def test_a_deleted_middle_row_is_named_by_verify(audit, tmp_db):
    fill(audit, 10)
    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 5")
    conn.close()
    result = audit.verify()
    assert not result.ok
    assert result.broken_id == 5


def test_a_deleted_last_row_is_named_by_verify(audit, tmp_db):
    fill(audit, 10)
    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 10")
    conn.close()
    result = audit.verify()
    assert not result.ok
    assert result.broken_id == 10
    # Appending afterwards must not paper over the gap.
    audit.append("system", "execution.step")
    assert audit.verify().broken_id == 10


# -- content -------------------------------------------------------------------------------


def test_secrets_are_scrubbed_from_detail(tmp_db):
    token = "xoxb-1111-2222-supersecretvalue"
    log = AuditLog(tmp_db, secrets=[token, "signing-secret-abc"])
    log.append(
        "system",
        "auth.rejected",
        detail={"header": f"Bearer {token}", "nested": {"secret": "signing-secret-abc"}},
    )
    [row] = rows(tmp_db)
    assert token not in row["detail"]
    assert "signing-secret-abc" not in row["detail"]
    assert "***" in row["detail"]
    assert log.verify().ok


def test_the_hash_is_sha256_of_the_documented_canonical_form(audit, tmp_db):
    """docs/audit.md's recipe, written out independently of bot/audit.py."""
    audit.append("U0ALICE", "request.approved", host="prod-web-01", request_id="r-1",
                 detail={"b": "é", "a": [1, 2]})  # fmt: skip
    audit.append("system", "execution.started", runbook="add-swap", incident_id=7)
    prev = "0" * 64
    for r in rows(tmp_db):
        canonical = json.dumps(
            [r["id"], r["ts"], r["actor"], r["action"], r["host"], r["runbook"],
             r["request_id"], r["incident_id"], r["detail"], prev],
            ensure_ascii=False, separators=(",", ":"),
        )  # fmt: skip
        assert r["prev_hash"] == prev
        assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == r["hash"]
        prev = r["hash"]
    first = rows(tmp_db)[0]
    assert first["detail"] == '{"a":[1,2],"b":"é"}'  # sorted keys, no spaces, UTF-8 kept
    assert first["ts"].endswith("Z")


def test_a_failed_transaction_leaves_no_audit_row(audit, tmp_db):
    fill(audit, 2)
    with pytest.raises(RuntimeError), tmp_db.transaction() as tx:
        audit.append("system", "request.created", request_id="r-9", conn=tx)
        raise RuntimeError("the state change failed")
    audit.append("system", "request.created", request_id="r-10")
    assert [r["request_id"] for r in rows(tmp_db)] == [None, None, "r-10"]
    assert audit.verify().ok


def test_unknown_actions_and_actors_are_refused(audit, tmp_db):
    with pytest.raises(StabilizeError):
        audit.append("system", "request.teleported")
    with pytest.raises(StabilizeError):
        audit.append("somebody; drop table", "request.created")
    assert rows(tmp_db) == []


def test_append_many_continues_the_chain(audit, tmp_db):
    fill(audit, 2)
    events = [
        Event("agent", "alert.received", host="prod-web-01", detail={"n": i}) for i in range(5)
    ]
    assert audit.append_many(events) == 5
    assert audit.verify().ok
    assert_one_chain(tmp_db, 7)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    detail=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(st.text(max_size=40), st.integers(), st.booleans(), st.none()),
        max_size=5,
    ),
    host=st.one_of(st.none(), st.text(max_size=30)),
)
def test_any_detail_and_host_round_trip_and_verify(detail, host):
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "a.db")
        log = AuditLog(db)
        log.append("system", "input.rejected", host=host, detail=detail)
        log.append("system", "input.rejected", host=host, detail=detail)
        [row, _] = log.list()
        assert json.loads(row["detail"]) == detail
        assert row["host"] == host
        assert log.verify().ok
        db.close()


# -- the CLI -------------------------------------------------------------------------------


def stabilize(*args: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        cwd=ROOT,
        env={**os.environ, "STABILIZE_DB": str(db), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_audit_verify_exit_codes(audit, tmp_db):
    fill(audit, 5)
    ok = stabilize("audit", "verify", db=tmp_db.path)
    assert ok.returncode == 0, ok.stderr
    assert "5" in ok.stdout

    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("""UPDATE audit_events SET detail = '{"step":"edited"}' WHERE id = 3""")
    conn.close()
    broken = stabilize("audit", "verify", db=tmp_db.path)
    assert broken.returncode == 1
    assert "3" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def rewrite_from(conn: sqlite3.Connection, first: int, detail: str) -> None:
    """What a careful forger does: change event ``first`` and recompute every later hash."""
    from bot.audit import COLUMNS, row_hash

    drop_triggers(conn)
    conn.execute("UPDATE audit_events SET detail = ? WHERE id = ?", (detail, first))
    prev = conn.execute("SELECT hash FROM audit_events WHERE id = ?", (first - 1,)).fetchone()[0]
    for r in conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE id >= ? ORDER BY id", (first,)
    ).fetchall():
        row = {**dict(r), "prev_hash": prev}
        prev = row_hash(row)
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?",
            (row["prev_hash"], prev, row["id"]),
        )


def test_an_anchor_catches_a_rewrite_that_recomputed_every_hash(audit, tmp_db):
    fill(audit, 5)
    first = stabilize("audit", "verify", db=tmp_db.path)
    assert first.returncode == 0, first.stderr
    [line] = [x for x in first.stdout.splitlines() if x.startswith("anchor: ")]
    kept = line.removeprefix("anchor: ")
    assert kept == f"5:{rows(tmp_db)[-1]['hash']}"
    fill(audit, 2)  # the log goes on; the anchor stays valid
    again = stabilize("audit", "verify", "--anchor", kept, db=tmp_db.path)
    assert again.returncode == 0, again.stderr
    assert "7 events verified; 1 anchor(s) match" in again.stdout

    conn = raw(tmp_db)
    rewrite_from(conn, 3, '{"step":"forged"}')
    conn.close()
    assert audit.verify().ok  # the chain alone cannot tell
    forged = stabilize("audit", "verify", "--anchor", kept, db=tmp_db.path)
    assert forged.returncode == 1
    assert forged.stderr.strip() == (
        "audit chain broken at event 5: its hash is not the anchor's:"
        " the history up to here was rewritten and rehashed"
    )


def test_an_anchor_catches_a_tail_cut_with_the_sequence_edited_too(audit, tmp_db):
    fill(audit, 5)
    kept = audit.verify().anchor
    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id > 3")
    conn.execute("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'audit_events'")
    conn.close()
    assert audit.verify().ok  # the chain alone cannot tell
    cut = stabilize("audit", "verify", "--anchor", kept, db=tmp_db.path)
    assert cut.returncode == 1
    assert "broken at event 5: the anchored event is missing: the log ends at event 3" in (
        cut.stderr
    )


@pytest.mark.parametrize("bad", ["5", "x:" + "a" * 64, "0:" + "a" * 64, "5:" + "A" * 64, "5:abc"])
def test_a_malformed_anchor_is_one_line_and_exit_2(audit, tmp_db, bad):
    fill(audit, 1)
    result = stabilize("audit", "verify", "--anchor", bad, db=tmp_db.path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --anchor '{bad}' is not ID:HASH")


def test_cli_audit_verify_without_a_database_exits_2(tmp_path):
    missing = stabilize("audit", "verify", db=tmp_path / "nope" / "stabilize.db")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr


def test_cli_audit_list_json_prints_the_rows(audit, tmp_db):
    audit.append("U0ALICE", "request.approved", host="prod-web-01", request_id="r-1")
    audit.append("system", "execution.started", host="prod-db-01")
    listed = stabilize("audit", "list", "--json", "--host", "prod-web-01", db=tmp_db.path)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["actor"] == "U0ALICE"
    assert row["action"] == "request.approved"
    assert set(row) >= {"id", "ts", "detail", "prev_hash", "hash"}


# -- docs/audit.md's by-hand recipe ------------------------------------------------------


def by_hand_script() -> str:
    text = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    after = text.split("<!-- verify-by-hand", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(
    not (shutil.which("sqlite3") and shutil.which("sha256sum")),
    reason="the sqlite3 shell or sha256sum is not installed (apt-get install sqlite3)",
)
def test_the_documented_by_hand_check_agrees_with_verify(audit, tmp_db, tmp_path):
    script = tmp_path / "verify-audit.sh"
    script.write_text(by_hand_script())
    audit.append(
        "agent",
        "alert.received",
        host="prod-web-01",
        incident_id=1,
        detail={"summary": 'tab\there "quoted" \\ back\nslash', "who": "é 日本 😀", "n": 2.5},
    )
    fill(audit, 5)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), str(tmp_db.path)], capture_output=True, text=True, timeout=60
        )

    intact = check()
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "chain intact: 6 events" in intact.stdout

    conn = raw(tmp_db)
    drop_triggers(conn)
    conn.execute("DELETE FROM audit_events WHERE id = 6")
    truncated = check()
    assert truncated.returncode == 1
    assert "event 6" in truncated.stdout
    conn.execute("""UPDATE audit_events SET detail = '{"n":3}' WHERE id = 1""")
    conn.close()
    altered = check()
    assert altered.returncode == 1
    assert "event 1" in altered.stdout


def test_a_secret_with_json_special_characters_is_scrubbed_too(tmp_db):
    secret = 'webhook"token\\with\tspecials'
    log = AuditLog(tmp_db, secrets=[secret])
    log.append("system", "auth.rejected", detail={"header": f"Bearer {secret}"})
    [row] = rows(tmp_db)
    assert "webhook" not in row["detail"]
    assert json.loads(row["detail"]) == {"header": "Bearer ***"}
    assert log.verify().ok


def test_a_secret_spelled_like_json_punctuation_still_leaves_valid_json(tmp_db):
    log = AuditLog(tmp_db, secrets=['1,"k":'])
    log.append("system", "auth.rejected", detail={"a": 1, "k": 2})
    [row] = rows(tmp_db)
    assert '1,"k":' not in row["detail"]
    assert json.loads(row["detail"]) == {"scrubbed": '{"a":***2}'}
    assert log.verify().ok


# -- the chain head kept inside one transaction --------------------------------------------


def test_appends_inside_chain_read_the_head_once_and_still_make_one_chain(audit, tmp_db):
    fill(audit, 3)
    reads: list[str] = []
    with tmp_db.transaction() as tx:
        tx.set_trace_callback(reads.append)
        with audit.chain(tx):
            for i in range(4):
                audit.append(
                    "agent", "alert.received", host="prod-web-01", detail={"n": i}, conn=tx
                )
        tx.set_trace_callback(None)
    assert sum("FROM audit_events ORDER BY id DESC" in sql for sql in reads) == 1
    fill(audit, 1)  # an append after the block reads the head from the table again
    assert audit.verify().ok
    assert_one_chain(tmp_db, 8)


def test_a_rolled_back_chain_leaves_the_next_transaction_a_correct_head(audit, tmp_db):
    fill(audit, 2)
    with pytest.raises(RuntimeError), tmp_db.transaction() as tx, audit.chain(tx):
        audit.append("agent", "alert.received", host="a", conn=tx)
        audit.append("agent", "alert.received", host="b", conn=tx)
        raise RuntimeError("the batch failed")
    with tmp_db.transaction() as tx, audit.chain(tx):
        audit.append("agent", "alert.received", host="c", conn=tx)
    assert [r["host"] for r in rows(tmp_db)] == ["prod-web-01", "prod-web-01", "c"]
    assert audit.verify().ok


def test_chain_needs_a_transaction_and_is_not_reentrant(audit, tmp_db):
    with pytest.raises(RuntimeError, match="write transaction"), audit.chain(tmp_db.conn):
        pass
    with (
        tmp_db.transaction() as tx,
        audit.chain(tx),
        pytest.raises(RuntimeError, match="re-entrant"),
        audit.chain(tx),
    ):
        pass
    fill(audit, 1)
    assert audit.verify().ok
