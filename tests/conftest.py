"""Real components as fixtures, each on 127.0.0.1 and a free port, gone after the test.

===================  =========  ==========================================================
fixture              scope      what you get
===================  =========  ==========================================================
sshd                 session    ``SshServer``: a real OpenSSH server; ``connect()`` → fabric
moto_server          session    ``CountingMotoServer``: moto, counting requests at the server
aws_env              function   env pointing boto3 at ``moto_server`` (state reset first)
alertmanager         function   factory ``(webhook_url, token=None, **timing) → Alertmanager``
slack_api            function   ``SlackStandIn``: the Slack Web API stand-in (own thread)
slack_signer         function   ``SlackSigner``: signs and builds slash commands / clicks
agent_signer         function   ``AgentSigner``: signs ``/alerts/agent`` bodies
stabilize_env        function   env for the bot: Slack stand-in, secrets, DB, config
tmp_db               function   a fresh ``bot.db.Database`` in tmp_path
settings_factory     function   ``(overrides=None, **top_level) → bot.config.Settings``
===================  =========  ==========================================================

Plain helpers (``free_port``, ``wait_for_port``, ``wait_until``, ``write_config``) live in
``tests/helpers`` and are imported as ``from helpers import …``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # so `from helpers import …` works from any test folder
    sys.path.insert(0, str(TESTS))

from helpers import alertmanager as am  # noqa: E402
from helpers import deep_merge, write_config  # noqa: E402
from helpers import sshd as ssh  # noqa: E402
from helpers.signers import AgentSigner, SlackSigner  # noqa: E402
from slack_standin import SlackStandIn  # noqa: E402

# What settings_factory and stabilize_env start from.
TEST_CONFIG: dict[str, Any] = {
    "slack": {"channel": "C0ALERTS"},
    "approvals": {"approvers": ["U0ALICE", "U0BOB"]},
    "aws": {"region": "us-east-1"},
}


# -- SSH ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd() -> Iterator[ssh.SshServer]:
    """A real OpenSSH server for the whole session (skips if sshd is not installed).

    ``sshd.host/port/user/key_path/log_path``; ``sshd.connect()`` → fabric Connection;
    ``sshd.host_config()`` → a ``hosts.<name>`` config entry; ``m = sshd.mark()`` then
    ``sshd.connections(m)`` / ``sshd.commands(m)`` count what happened after the mark.
    """
    reason = ssh.missing_reason()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="stabilize-sshd-") as tmp:
        server = ssh.SshServer(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def slow_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """invoke's timeout timer closes the SSH channel, then lingers: the command ends before
    the timer thread does (the race in which invoke forgets it timed out)."""
    import time

    from fabric.runners import Remote

    close = Remote.kill

    def kill(self: Remote) -> None:
        try:
            close(self)
        except EOFError:  # the connection went first (a test ended): nothing left to stop
            return
        time.sleep(0.8)

    monkeypatch.setattr(Remote, "kill", kill)


# -- AWS ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """moto's server on a free port; ``.url``, ``.count(service=, action=)``, ``.reset()``."""
    from helpers.aws import CountingMotoServer

    server = CountingMotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """boto3 talks to ``moto_server`` (via ``AWS_ENDPOINT_URL``), which starts empty.

    Returns the server, so ``aws_env.count(action="DescribeInstances")`` works.
    """
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # Keep boto3 away from the developer's own files and the metadata service.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


# -- Alertmanager ------------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[..., am.Alertmanager]]:
    """Factory: ``alertmanager(webhook_url, token=None, group_wait="1s", group_interval="1s",
    repeat_interval="1h", group_by=("alertname", "instance"))`` starts a real Alertmanager
    whose only receiver is that webhook (with ``Authorization: Bearer <token>`` if given).

    The result has ``.url``, ``.post_alert(alertname, instance=…, labels=…)``,
    ``.resolve_alert(alertname, instance=…)``, ``.post_alerts([...])``, ``.alerts()``.
    Every one started is stopped after the test.
    """
    reason = am.missing_reason()
    if reason:
        pytest.skip(reason)
    started: list[am.Alertmanager] = []

    def start(webhook_url: str, token: str | None = None, **options: Any) -> am.Alertmanager:
        directory = tmp_path / f"alertmanager-{len(started)}"
        manager = am.Alertmanager(directory, webhook_url, token, **options)
        started.append(manager)
        return manager.start()

    try:
        yield start
    finally:
        for manager in started:
            manager.stop()


# -- Slack -------------------------------------------------------------------------------


@pytest.fixture
def slack_api() -> Iterator[SlackStandIn]:
    """The Slack Web API stand-in: ``.url`` (…/api/), ``.token``, ``.calls(method)``,
    ``.wait_for(method, n)``, ``.messages(channel)``, ``.fail_next(n, status=429,
    retry_after=1)``, ``.fail_for(seconds, …)``, ``.response_url()``, ``.responses(url)``,
    ``.reset()``."""
    with SlackStandIn() as api:
        yield api


@pytest.fixture
def slack_signer(slack_api: SlackStandIn) -> SlackSigner:
    """Signs like Slack (``.headers(body, age=…)``, ``.sign(body)``) and builds bodies:
    ``.slash_command("prod-web-01", user_id=…)``, ``.block_actions("approve", "42", …)``.
    Response URLs in those bodies point at ``slack_api``."""
    return SlackSigner(response_url=slack_api.response_url)


@pytest.fixture
def agent_signer() -> AgentSigner:
    """Signs ``/alerts/agent`` bodies like the agent:
    ``body, headers = agent_signer.sign(agent_signer.alert(host="prod-web-01"))``."""
    return AgentSigner()


@pytest.fixture
def stabilize_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    slack_api: SlackStandIn,
    slack_signer: SlackSigner,
    agent_signer: AgentSigner,
) -> dict[str, str]:
    """The environment ``stabilize`` reads, pointing at the stand-ins; also returned as a
    dict (handy as ``env=`` for a subprocess: ``{**os.environ, **stabilize_env}``).

    The config file is written with the test defaults; rewrite it with ``write_config``.
    """
    env = {
        "SLACK_BOT_TOKEN": slack_api.token,
        "SLACK_SIGNING_SECRET": slack_signer.secret,
        "SLACK_API_URL": slack_api.url,
        "STABILIZE_WEBHOOK_TOKEN": agent_signer.token,
        "STABILIZE_DB": str(tmp_path / "stabilize.db"),
        "STABILIZE_CONFIG": str(write_config(tmp_path, TEST_CONFIG)),
    }
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# -- database and settings ---------------------------------------------------------------


@pytest.fixture
def tmp_db(tmp_path: Path) -> Iterator[Any]:
    """A fresh, migrated ``bot.db.Database`` at ``tmp_path/stabilize.db``."""
    from bot.db import Database

    db = Database(tmp_path / "stabilize.db")
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def settings_factory() -> Callable[..., Any]:
    """``settings_factory()`` → Settings with the test defaults (channel C0ALERTS, approvers
    U0ALICE/U0BOB); ``settings_factory({"dry_run": True})`` or ``settings_factory(hosts={…})``
    merges overrides in (nested dicts merge; a ``None`` value removes the key)."""
    from bot.config import parse_settings

    def build(overrides: dict[str, Any] | None = None, /, **top_level: Any) -> Any:
        data = deep_merge(TEST_CONFIG, {**(overrides or {}), **top_level})
        return parse_settings(data, source="<test>")

    return build
