"""``stabilize runbooks`` and ``stabilize plan``: the catalogue, exact plans, one-line refusals."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner
from helpers import write_config

from bot.audit import AuditLog
from bot.db import Database
from commands.cli import main

CONFIG = {
    "slack": {"channel": "C0ALERTS"},
    "hosts": {
        "prod-web-01": {
            "ssh": {"host": "10.0.1.5", "user": "ubuntu", "key": "~/.ssh/id_ed25519"},
            "instance_id": "i-0123456789abcdef0",
        },
        "root-box": {"ssh": {"host": "10.0.1.6", "user": "root"}},
    },
}


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("STABILIZE_DB", str(tmp_path / "s.db"))
    config = write_config(tmp_path, CONFIG)

    def run(*args: str):
        return CliRunner().invoke(
            main, [*args, "--config", str(config)] if args[0] == "plan" else list(args)
        )

    run.db = tmp_path / "s.db"
    return run


def test_runbooks_lists_each_runbook_with_its_parameters(cli):
    out = cli("runbooks")
    assert out.exit_code == 0, out.output
    for name in ("add-swap", "resize-instance", "scale-asg"):
        assert name in out.output
    assert "size (size, default 4G, 1G–64G)" in out.output
    assert "type (str, required)" in out.output
    assert "desired (int, 0–10000)" in out.output


def test_plan_prints_the_exact_quoted_commands(cli):
    out = cli("plan", "add-swap", "prod-web-01", "size=8G", "path=/var/swap.img")
    assert out.exit_code == 0, out.output
    assert "over ssh as ubuntu@10.0.1.5:22" in out.output
    inner = "umask 077; fallocate -l 8589934592 /var/swap.img 2>/dev/null"
    assert f"sudo -n sh -c {shlex.quote(inner)}"[:60] in out.output
    assert "sudo -n sh -c 'mkswap /var/swap.img'" in out.output
    assert "on failure, roll back:" in out.output


def test_plan_as_root_needs_no_sudo(cli):
    out = cli("plan", "add-swap", "root-box")
    assert out.exit_code == 0, out.output
    assert "sudo" not in out.output
    assert "\n5. [swapon] swapon /swapfile\n" in out.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add-swap", "prod-web-01", "size=1T"), "size=1T is out of bounds: use 1G to 64G"),
        (("add-swap", "nowhere"), "unknown host 'nowhere'"),
        (("reboot", "prod-web-01"), "unknown runbook 'reboot' (known runbooks: add-swap,"),
        (("add-swap", "prod-web-01", "colour=red"), "add-swap has no parameter 'colour'"),
        (("add-swap", "prod-web-01", "sizeless"), "parameters are key=value"),
        (("add-swap", "prod-web-01", "path=relative/x"), "use an absolute path"),
        (("add-swap", "prod-web-01", "path=/a/../etc/passwd"), "use an absolute path"),
        (("add-swap", "prod-web-01", "fstab=/etc/passwd"), "fstab=/etc/passwd: not an fstab file"),
        (
            ("add-swap", "prod-web-01", "path=/tmp/fstab", "fstab=/tmp/fstab"),
            "path and fstab are both /tmp/fstab",
        ),
        (("scale-asg", "prod-web-01", "desired=2"), "needs an Auto Scaling Group"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_audited(cli, args, message):
    out = cli("plan", *args)
    assert out.exit_code == 2
    assert out.output.startswith("error: ") and message in out.output
    assert out.output.count("\n") == 1
    rows = AuditLog(Database(cli.db)).list(action="input.rejected")
    assert len(rows) == 1 and rows[0]["actor"].startswith("cli:")
    assert message in json.loads(rows[0]["detail"])["error"]
