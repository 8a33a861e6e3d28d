"""Configuration: the YAML file (see CONTRACT) plus secrets from the environment only.

``load_settings`` turns any problem into one ``ConfigError`` line that names the file and the
key, e.g. ``stabilize.yaml: approvals.expires_after: malformed duration '15x' …``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from bot.durations import parse_duration
from bot.errors import ConfigError, InputError

DEFAULT_CONFIG = "./stabilize.yaml"
DEFAULT_DB = "./stabilize.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_CERT_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"

# Host names become Slack text, SQL values and (quoted) SSH targets: keep them boring.
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")  # \Z: "$" allows a final \n


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackSettings(_Model):
    channel: str = Field(min_length=1)


class RunbookPolicy(_Model):
    approvers: list[str] | None = None
    required: int | None = Field(default=None, ge=1, le=10)
    allow_self: bool | None = None
    expires_after: Duration | None = None


class ApprovalSettings(_Model):
    approvers: list[str] = Field(default_factory=list)
    expires_after: Duration = 900.0
    required: int = Field(default=1, ge=1, le=10)
    allow_self: bool = False
    runbooks: dict[str, RunbookPolicy] = Field(default_factory=dict)


class AwsSettings(_Model):
    region: str = "us-east-1"


class SshTarget(_Model):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    gateway: str | None = None


class HostSettings(_Model):
    ssh: SshTarget | None = None
    instance_id: str | None = Field(default=None, pattern=r"^i-[0-9a-f]{8,17}$")
    asg: str | None = None
    executor: Literal["ssh", "ssm"] = "ssh"

    @model_validator(mode="after")
    def _needs_a_way_in(self) -> HostSettings:
        if self.ssh is None and self.instance_id is None:
            raise ValueError("a host needs 'ssh' or 'instance_id' (or both)")
        if self.executor == "ssm" and self.instance_id is None:
            raise ValueError("executor 'ssm' needs 'instance_id'")
        return self


class SshSettings(_Model):
    gateways: dict[str, SshTarget] = Field(default_factory=dict)
    connect_timeout: Duration = 10.0
    # An OpenSSH known_hosts file. Set, every host key (gateways too) is checked against it
    # and an unknown or changed key is refused; unset, host keys are not checked.
    known_hosts: str | None = Field(default=None, min_length=1)


class SnsSettings(_Model):
    topics: list[str] = Field(default_factory=list)
    cert_url_pattern: str = DEFAULT_CERT_URL_PATTERN

    @model_validator(mode="after")
    def _pattern_compiles(self) -> SnsSettings:
        try:
            re.compile(self.cert_url_pattern)
        except re.error as exc:
            raise ValueError(f"cert_url_pattern is not a valid regular expression: {exc}") from None
        return self


class Settings(_Model):
    """Everything the YAML says, validated. Secrets are never here: see ``Secrets``."""

    slack: SlackSettings
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    dry_run: bool = False
    hosts: dict[str, HostSettings] = Field(default_factory=dict)
    ssh: SshSettings = Field(default_factory=SshSettings)
    sns: SnsSettings = Field(default_factory=SnsSettings)
    # Where the settings came from, for messages; not a YAML key.
    _source: str = PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        return self._source

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        for name, host in self.hosts.items():
            if not HOST_NAME_RE.match(name):
                raise ValueError(f"hosts: invalid host name {name!r} (letters, digits, . _ -)")
            if host.ssh and host.ssh.gateway and host.ssh.gateway not in self.ssh.gateways:
                raise ValueError(
                    f"hosts.{name}.ssh.gateway: {host.ssh.gateway!r} is not in ssh.gateways"
                )
        return self

    def host(self, name: str) -> HostSettings | None:
        return self.hosts.get(name)


@dataclass(frozen=True)
class Secrets:
    """Secrets from the environment only. ``repr`` masks them so they never reach a log."""

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    webhook_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Secrets:
        env = dict(os.environ if env is None else env)
        url = env.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        if not url.endswith("/"):
            url += "/"
        return cls(
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            webhook_token=env.get("STABILIZE_WEBHOOK_TOKEN") or None,
            slack_api_url=url,
        )

    def values(self) -> list[str]:
        """Every secret value that is set, for scrubbing and for tests that grep for leaks."""
        return [
            v
            for v in (
                self.slack_bot_token,
                self.slack_signing_secret,
                self.slack_app_token,
                self.webhook_token,
            )
            if v
        ]

    def masked(self) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN": mask(self.slack_bot_token),
            "SLACK_SIGNING_SECRET": mask(self.slack_signing_secret),
            "SLACK_APP_TOKEN": mask(self.slack_app_token),
            "STABILIZE_WEBHOOK_TOKEN": mask(self.webhook_token),
            "SLACK_API_URL": self.slack_api_url,
        }

    def __repr__(self) -> str:
        return f"Secrets({self.masked()})"

    __str__ = __repr__


def mask(value: str | None) -> str:
    """``xoxb-…(24 chars)``: enough to tell which token, never the token."""
    if not value:
        return "(not set)"
    prefix = value.split("-", 1)[0] + "-" if value.startswith(("xoxb-", "xapp-", "xoxp-")) else ""
    return f"{prefix}…({len(value)} chars)"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config`` wins over ``STABILIZE_CONFIG``, which wins over ``./stabilize.yaml``."""
    return Path(explicit or os.environ.get("STABILIZE_CONFIG") or DEFAULT_CONFIG).expanduser()


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("STABILIZE_DB") or DEFAULT_DB).expanduser()


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = _format_loc(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc}'"
    if kind == "missing":
        return f"missing key '{loc}'"
    msg = err["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg} (got {err.get('input')!r})"
    return f"{loc}: {msg}" if loc else msg


def parse_settings(data: Any, source: str = "<memory>") -> Settings:
    """Validate an already-parsed mapping. Raises ConfigError naming ``source`` and the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    settings._source = source
    return settings


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the YAML config; every problem is one ConfigError line."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: no such config file (pass --config FILE or set STABILIZE_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: broken YAML{where}: {problem}") from None
    return parse_settings(data, source=str(file))


def cautions(settings: Settings) -> list[str]:
    """What is valid but weaker than it should be in production, one line each with the fix."""
    found = []
    ssh_hosts = [name for name, host in settings.hosts.items() if host.ssh]
    if ssh_hosts and not settings.ssh.known_hosts:
        found.append(
            f"ssh.known_hosts is not set: the host keys of {len(ssh_hosts)} SSH host(s)"
            f" ({', '.join(ssh_hosts[:3])}{', …' if len(ssh_hosts) > 3 else ''}) are not"
            " checked (set it to a known_hosts file; ssh-keyscan -p PORT HOST >> FILE adds one)"
        )
    return found


def describe(settings: Settings, secrets: Secrets) -> dict[str, Any]:
    """What was understood, for ``stabilize config check``; secrets masked."""
    return {
        "config": settings.source,
        "settings": settings.model_dump(mode="json"),
        "secrets": secrets.masked(),
    }
