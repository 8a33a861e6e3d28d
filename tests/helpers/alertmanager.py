"""A real Prometheus Alertmanager on 127.0.0.1 whose webhook receiver the test chooses."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from helpers import LOOPBACK, free_port, stop_process, wait_for_port, wait_until

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def missing_reason() -> str | None:
    if not Path(ALERTMANAGER).exists() and shutil.which("prometheus-alertmanager") is None:
        return (
            f"Prometheus Alertmanager not installed ({ALERTMANAGER} missing): "
            "apt-get install prometheus-alertmanager"
        )
    return None


def binary() -> str:
    if Path(ALERTMANAGER).exists():
        return ALERTMANAGER
    return str(shutil.which("prometheus-alertmanager"))


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Alertmanager:
    """One Alertmanager process; ``post_alert``/``resolve_alert`` talk to its v2 API."""

    directory: Path
    webhook_url: str
    token: str | None = None
    group_wait: str = "1s"
    group_interval: str = "1s"
    repeat_interval: str = "1h"
    group_by: tuple[str, ...] = ("alertname", "instance")
    send_resolved: bool = True
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "am.yml"

    @property
    def log_path(self) -> Path:
        return self.directory / "alertmanager.log"

    def config(self) -> dict[str, Any]:
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": self.send_resolved}
        if self.token is not None:
            webhook["http_config"] = {"authorization": {"credentials": self.token}}
        return {
            "route": {
                "receiver": "stabilize",
                "group_by": list(self.group_by),
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [{"name": "stabilize", "webhook_configs": [webhook]}],
        }

    def start(self) -> Alertmanager:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.port = free_port()
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.process = subprocess.Popen(
                [
                    binary(),
                    f"--config.file={self.config_path}",
                    f"--storage.path={self.directory / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.port, alive=lambda: self.process.poll() is None)
            wait_until(self._ready, timeout=15)
        except Exception as exc:
            self.stop()
            log = self.log_path.read_text()
            raise RuntimeError(f"alertmanager did not start: {exc}\n{log}") from None
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        stop_process(proc, timeout=10)
        self.process = None

    # -- the v2 API ----------------------------------------------------------------------

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """``POST /api/v2/alerts`` with alerts in the API's own shape."""
        req = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.read()

    def post_alert(
        self,
        alertname: str = "HostOutOfMemory",
        *,
        instance: str = "prod-web-01",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        severity: str = "critical",
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Fire one alert (labels ``alertname``, ``instance``, ``severity`` plus ``labels``)."""
        alert: dict[str, Any] = {
            "labels": {
                "alertname": alertname,
                "instance": instance,
                "severity": severity,
                **(labels or {}),
            },
            "annotations": annotations
            or {"summary": f"{alertname} on {instance}", "description": "test alert"},
            "startsAt": _iso(starts_at or datetime.now(UTC) - timedelta(seconds=5)),
            "generatorURL": f"http://{LOOPBACK}:9090/graph?g0.expr=up",
        }
        if ends_at is not None:
            alert["endsAt"] = _iso(ends_at)
        self.post_alerts([alert])
        return alert

    def resolve_alert(self, alertname: str = "HostOutOfMemory", **kwargs: Any) -> dict[str, Any]:
        """Resolve an alert: the same labels again with ``endsAt`` in the past."""
        kwargs.setdefault("starts_at", datetime.now(UTC) - timedelta(minutes=1))
        return self.post_alert(
            alertname, ends_at=datetime.now(UTC) - timedelta(seconds=1), **kwargs
        )

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: what Alertmanager currently holds."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as resp:
            return json.load(resp)
