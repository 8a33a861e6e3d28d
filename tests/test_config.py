"""Configuration: the contract's YAML is understood; every mistake is one line that names the
file and the key; secrets are masked and never printed; bad set-ups exit 2 from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import free_port, write_config

from bot.config import Secrets, load_settings, parse_settings
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# The example from CONTRACT.md, verbatim.
CONTRACT_YAML = r"""
slack:
  channel: C0ALERTS            # where alerts and diagnoses are posted
approvals:
  approvers: [U0ALICE, U0BOB]  # Slack user IDs allowed to approve anything
  expires_after: 15m           # pending approvals expire (default 15m)
  required: 1                  # distinct approvers needed (default 1)
  allow_self: false            # may the requester approve their own request (default false)
  runbooks:                    # per-runbook policy overrides
    resize-instance: {approvers: [U0ALICE, U0BOB], required: 2, allow_self: false}
    add-swap: {required: 1, allow_self: true}
aws:
  region: us-east-1
dry_run: false                 # true: approved runbooks only post their plan
hosts:                         # inventory; a host missing here is looked up by EC2 tag Name
  prod-web-01:
    ssh: {host: 10.0.1.5, port: 22, user: ubuntu, key: ~/.ssh/id_ed25519, gateway: bastion}
    instance_id: i-0123456789abcdef0
    asg: web-asg
    executor: ssh              # or ssm: runbooks go through SSM Run Command, no SSH needed
ssh:
  gateways:
    bastion: {host: 203.0.113.7, user: ec2-user}
  connect_timeout: 10s
sns:
  topics: [arn:aws:sns:us-east-1:123456789012:alarms]   # if set, other TopicArns are refused
  # signing-certificate URLs must match this; the default is AWS's own hosts. Only tests
  # point it at a local server.
  cert_url_pattern: '^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/'
"""

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-1234567890-0987654321-TopSecretBotToken",
    "SLACK_SIGNING_SECRET": "f3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8",
    "SLACK_APP_TOKEN": "xapp-1-A0STABILIZE-1234-TopSecretAppToken",
    "STABILIZE_WEBHOOK_TOKEN": "webhook-TopSecret-7f6e5d4c",
}


def stabilize(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean environment: no secrets unless the test passes them."""
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "STABILIZE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- the file ------------------------------------------------------------------------------


def test_the_contract_example_is_understood(tmp_path):
    settings = load_settings(write_config(tmp_path, CONTRACT_YAML))
    assert settings.slack.channel == "C0ALERTS"
    assert settings.approvals.approvers == ["U0ALICE", "U0BOB"]
    assert settings.approvals.expires_after == 900
    assert settings.approvals.runbooks["resize-instance"].required == 2
    assert settings.approvals.runbooks["add-swap"].allow_self is True
    host = settings.hosts["prod-web-01"]
    assert (host.ssh.host, host.ssh.port, host.ssh.user) == ("10.0.1.5", 22, "ubuntu")
    assert host.ssh.gateway == "bastion"
    assert host.instance_id == "i-0123456789abcdef0"
    assert host.asg == "web-asg"
    assert host.executor == "ssh"
    assert settings.ssh.gateways["bastion"].user == "ec2-user"
    assert settings.ssh.connect_timeout == 10
    assert settings.sns.topics == ["arn:aws:sns:us-east-1:123456789012:alarms"]
    assert settings.dry_run is False
    assert settings.source == str(tmp_path / "stabilize.yaml")


def test_only_slack_channel_is_required(tmp_path):
    settings = load_settings(write_config(tmp_path, {"slack": {"channel": "C0ALERTS"}}))
    assert settings.approvals.expires_after == 900
    assert settings.approvals.required == 1
    assert settings.approvals.allow_self is False
    assert settings.hosts == {}


BAD = {
    "unknown nested key": ({"approvals": {"aprovers": ["U0ALICE"]}}, "approvals.aprovers"),
    "unknown top-level key": ({"slak": {"channel": "C1"}}, "slak"),
    "unknown host key": ({"hosts": {"web": {"ssh": {"host": "h", "pot": 22}}}}, "pot"),
    "wrong type": ({"approvals": {"required": "many"}}, "approvals.required"),
    "wrong type bool": ({"dry_run": "perhaps"}, "dry_run"),
    "port out of range": ({"hosts": {"web": {"ssh": {"host": "h", "port": 70000}}}}, "port"),
    "malformed duration": ({"approvals": {"expires_after": "15x"}}, "approvals.expires_after"),
    "malformed timeout": ({"ssh": {"connect_timeout": "ten"}}, "ssh.connect_timeout"),
    "host without ssh or instance": ({"hosts": {"web": {"asg": "web-asg"}}}, "hosts.web"),
    "ssm without instance": (
        {"hosts": {"web": {"ssh": {"host": "h"}, "executor": "ssm"}}},
        "hosts.web",
    ),
    "unknown gateway": (
        {"hosts": {"web": {"ssh": {"host": "h", "gateway": "nowhere"}}}},
        "hosts.web.ssh.gateway",
    ),
    "bad instance id": ({"hosts": {"web": {"instance_id": "web-1"}}}, "hosts.web.instance_id"),
    "bad regex": ({"sns": {"cert_url_pattern": "(unclosed"}}, "cert_url_pattern"),
    "missing channel": ({"slack": None}, "slack"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_mistake_is_one_line_naming_file_and_key(tmp_path, case):
    change, key = BAD[case]
    data = {"slack": {"channel": "C0ALERTS"}, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert key in message


def test_broken_yaml_names_the_file_and_the_line(tmp_path):
    path = write_config(tmp_path, "slack:\n  channel: C0ALERTS\napprovals: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert "line" in message


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["", "- a list\n- not a mapping\n", "just a string\n"])
def test_an_empty_or_non_mapping_file_is_refused(tmp_path, text):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value)


def test_parse_settings_names_its_source():
    with pytest.raises(ConfigError, match=r"^<test>: unknown key 'nope'"):
        parse_settings({"slack": {"channel": "C1"}, "nope": 1}, source="<test>")


def test_secrets_never_show_in_repr_or_masked_form():
    secrets = Secrets.from_env(SECRETS)
    shown = repr(secrets) + str(secrets.masked())
    for value in SECRETS.values():
        assert value not in shown
    assert secrets.masked()["SLACK_BOT_TOKEN"].startswith("xoxb-…")
    assert secrets.slack_api_url == "https://slack.com/api/"


# -- the CLI -------------------------------------------------------------------------------


def test_config_check_prints_what_was_understood_with_secrets_masked(tmp_path):
    path = write_config(tmp_path, CONTRACT_YAML)
    result = stabilize("config", "check", "--config", str(path), **SECRETS)
    assert result.returncode == 0, result.stderr
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["settings"]["slack"]["channel"] == "C0ALERTS"
    assert shown["settings"]["hosts"]["prod-web-01"]["ssh"]["gateway"] == "bastion"
    assert shown["secrets"]["SLACK_BOT_TOKEN"].startswith("xoxb-…")
    assert shown["secrets"]["SLACK_SIGNING_SECRET"] != SECRETS["SLACK_SIGNING_SECRET"]


def test_config_check_cautions_when_ssh_host_keys_are_not_checked(tmp_path):
    hosts = {f"web-{n}": {"ssh": {"host": f"10.0.0.{n}"}} for n in range(5)}
    path = write_config(tmp_path, {"slack": {"channel": "C0ALERTS"}, "hosts": hosts})
    result = stabilize("config", "check", "--config", str(path), **SECRETS)
    assert result.returncode == 0, result.stderr
    (caution,) = [line for line in result.stderr.splitlines() if line.startswith("caution:")]
    assert "ssh.known_hosts is not set" in caution
    assert "5 SSH host(s) (web-0, web-1, web-2, …)" in caution
    assert "ssh-keyscan" in caution

    known = tmp_path / "known_hosts"
    known.write_text("")
    checked = {"slack": {"channel": "C0ALERTS"}, "hosts": hosts, "ssh": {"known_hosts": str(known)}}
    result = stabilize("config", "check", "--config", str(write_config(tmp_path, checked)))
    assert result.returncode == 0, result.stderr
    assert "caution:" not in result.stderr


def test_config_check_exits_2_with_one_line_on_errors(tmp_path):
    path = write_config(tmp_path, {"slack": {"channel": "C0ALERTS"}, "aprovals": {}})
    result = stabilize("config", "check", "--config", str(path), **SECRETS)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert str(path) in line
    assert "aprovals" in line
    assert result.stdout == ""


def test_config_check_exits_2_on_a_missing_file(tmp_path):
    result = stabilize("config", "check", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in one_line(result.stderr)


def test_config_flag_wins_over_the_environment(tmp_path):
    good = write_config(tmp_path, {"slack": {"channel": "C0GOOD"}}, name="good.yaml")
    bad = write_config(tmp_path, "broken: [\n", name="bad.yaml")
    result = stabilize("config", "check", "--config", str(good), STABILIZE_CONFIG=str(bad))
    assert result.returncode == 0, result.stderr
    assert "C0GOOD" in result.stdout
    from_env = stabilize("config", "check", STABILIZE_CONFIG=str(bad))
    assert from_env.returncode == 2
    assert "bad.yaml" in one_line(from_env.stderr)


def test_serve_without_a_signing_secret_exits_2_with_one_line(tmp_path):
    path = write_config(tmp_path, {"slack": {"channel": "C0ALERTS"}})
    env = {k: v for k, v in SECRETS.items() if k != "SLACK_SIGNING_SECRET"}
    result = stabilize(
        "serve",
        "--config",
        str(path),
        "--port",
        str(free_port()),
        STABILIZE_DB=str(tmp_path / "stabilize.db"),
        **env,
    )
    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET" in one_line(result.stderr)


@pytest.mark.parametrize("kind", ["missing folder", "a directory", "not a database"])
def test_an_unusable_database_path_exits_2_with_one_line(tmp_path, kind):
    path = write_config(tmp_path, {"slack": {"channel": "C0ALERTS"}})
    if kind == "missing folder":
        db = tmp_path / "no" / "such" / "stabilize.db"
    elif kind == "a directory":
        db = tmp_path / "adir"
        db.mkdir()
    else:
        db = tmp_path / "garbage.db"
        db.write_bytes(b"this is not an SQLite database at all" * 100)
    serve = stabilize(
        "serve", "--config", str(path), "--port", str(free_port()), STABILIZE_DB=str(db), **SECRETS
    )
    assert serve.returncode == 2
    assert str(db) in one_line(serve.stderr)
    assert "Traceback" not in serve.stderr
    listed = stabilize("audit", "list", STABILIZE_DB=str(db))
    assert listed.returncode == 2
    assert "Traceback" not in listed.stderr
    one_line(listed.stderr)
