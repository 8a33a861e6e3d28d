"""`stabilize serve` as a real process: Slack's requests on /slack/events, and a request
that was pending when the server stopped is approved after it starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import free_port, stop_process, wait_for_port, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent


def post(port: int, body: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "serve", "--port", str(self.port), "--dry-run"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, alive=lambda: self.proc.poll() is None, timeout=60)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, timeout=20)
        self.log.close()


def test_serve_answers_slack_and_keeps_requests_across_a_restart(
    stabilize_env, slack_api, slack_signer, tmp_path
):
    config = {
        "slack": {"channel": "C0ALERTS"},
        "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
        "hosts": {"prod-web-01": {"ssh": {"host": "127.0.0.1", "user": "ubuntu"}}},
    }
    write_config(Path(stabilize_env["STABILIZE_CONFIG"]).parent, config)
    env = {**os.environ, **stabilize_env}
    log = tmp_path / "serve.log"

    server = Server(env, log)
    try:
        body = slack_signer.slash_command("help")
        status, text = post(server.port, body, slack_signer.headers(body))
        assert status == 200 and "/stabilize run <runbook> <host>" in text
        body = slack_signer.slash_command("help")
        status, text = post(server.port, body, slack_signer.headers(body, age=900))
        assert status == 401 and "stale request" in text

        body = slack_signer.slash_command("run add-swap prod-web-01 size=2G", user_id="U0CAROL")
        assert post(server.port, body, slack_signer.headers(body))[0] == 200
        [request_post] = slack_api.wait_for("chat.postMessage", 1, timeout=30)
        approve = next(
            e
            for b in request_post.args["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"].startswith("approve")
        )
    finally:
        server.stop()

    server = Server(env, log)  # a new process on the same database
    try:
        body = slack_signer.block_actions(approve["action_id"], approve["value"], user_id="U0BOB")
        assert post(server.port, body, slack_signer.headers(body))[0] == 200
        # dry run: the real engine posts the plan in the request's thread
        thread = wait_until(
            lambda: [
                m
                for m in slack_api.messages("C0ALERTS")
                if m.get("thread_ts") == request_post.response["ts"] and "Dry run" in m["text"]
            ],
            timeout=30,
        )
        assert "swapon" in thread[0]["text"]
        updated = wait_until(
            lambda: [
                m
                for m in slack_api.messages("C0ALERTS")
                if m["ts"] == request_post.response["ts"] and "dry run" in m["text"]
            ],
            timeout=30,
        )
        assert "Approved by <@U0BOB>" in updated[0]["text"]
    finally:
        server.stop()
    printed = log.read_text()
    assert "Traceback" not in printed
    # a host over SSH and no ssh.known_hosts: said at every start
    assert printed.count("WARNING stabilize: ssh.known_hosts is not set") == 2
