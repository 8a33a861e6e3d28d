"""Prometheus metrics, one registry per running bot (so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.requests = Counter(
            "stabilize_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.acks = Histogram(
            "stabilize_slack_ack_seconds",
            "Time from receiving a Slack request to acknowledging it",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
        )
        self.alerts = Counter(
            "stabilize_alerts",
            "Alerts accepted, by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.executions = Counter(
            "stabilize_executions",
            "Runbook executions by runbook and outcome",
            ["runbook", "outcome"],
            registry=self.registry,
        )
        self.slack_errors = Counter(
            "stabilize_slack_api_errors",
            "Slack Web API errors by method and error",
            ["method", "error"],
            registry=self.registry,
        )
        self.slack_delivered = Counter(
            "stabilize_slack_delivered",
            "Messages delivered from the outbox, by operation",
            ["op"],
            registry=self.registry,
        )
        self.diagnoses = Counter(
            "stabilize_diagnoses",
            "Diagnoses run, by how the SSH and AWS facts went (ok, timeout, refused, error…)",
            ["ssh", "aws"],
            registry=self.registry,
        )

    def inc(self, metric: Counter, *labels: str) -> None:
        """``metric.labels(*labels).inc()`` for the hot paths: the labelled child is kept,
        as ``labels()`` itself costs a few microseconds a call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        child.inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
