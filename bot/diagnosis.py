"""Diagnosis: which host, its facts, the rules' findings, the recommended runbooks, and
posting all of it (stored, audited, enqueued) in one transaction.

The seams other modules call: ``known_host``, ``resolve_host``, ``diagnose``,
``diagnose_and_post``, ``load_recommendation`` (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.config import HOST_NAME_RE
from bot.db import iso
from bot.diagnosis_rules import Finding, Recommended, evaluate
from bot.errors import InputError
from bot.facts import Facts, HostTarget, gather_facts

if TYPE_CHECKING:
    from bot.facts_ssh import Runner
    from bot.services import Services

log = logging.getLogger(__name__)

__all__ = [
    "Diagnosis",
    "HostTarget",
    "Recommendation",
    "check_host_name",
    "diagnose",
    "diagnose_and_post",
    "diagnose_many",
    "known_host",
    "load_recommendation",
    "resolve_host",
]


@dataclass
class Diagnosis:
    host: str
    facts: Facts
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommended] = field(default_factory=list)
    id: int | None = None  # set once stored by diagnose_and_post

    @property
    def errors(self) -> list[str]:
        return self.facts.errors

    @property
    def worst(self) -> str:
        for severity in ("critical", "warning"):
            if any(f.severity == severity for f in self.findings):
                return severity
        return "info"

    def to_dict(self) -> dict[str, Any]:
        """The contract JSON of ``stabilize diagnose --json``."""
        return {
            "host": self.host,
            "facts": self.facts.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class Recommendation:
    """A stored recommendation: what a ``recommend_<n>`` button's value points at."""

    id: int
    diagnosis_id: int
    runbook: str
    host: str
    params: dict[str, str]
    reason: str
    evidence: list[str]
    incident_id: str | None = None
    thread_key: str | None = None


# -- which host ----------------------------------------------------------------------------


def check_host_name(name: str) -> str:
    """Return ``name`` if it is a valid host name, else raise InputError (one line)."""
    if not isinstance(name, str) or not HOST_NAME_RE.match(name):
        shown = repr(name[:64] if isinstance(name, str) else name)
        raise InputError(
            f"invalid host name {shown}: use letters, digits, '.', '_' and '-' (at most 63)"
        )
    return name


def known_host(services: Services, name: str) -> bool:
    """Is ``name`` in the inventory (``hosts:``)? No I/O."""
    return (
        isinstance(name, str)
        and bool(HOST_NAME_RE.match(name))
        and (name in services.settings.hosts)
    )


async def resolve_host(services: Services, name: str) -> HostTarget:
    """The inventory entry for ``name``, else the EC2 instance tagged ``Name=name``
    (running or stopped). Raises InputError when neither exists."""
    from bot.facts_aws import AwsFailure, find_instance_by_name

    check_host_name(name)
    settings = services.settings
    host = settings.hosts.get(name)
    if host is not None:
        return HostTarget.from_settings(name, host, settings.ssh.gateways)
    unknown = f"unknown host '{name}': not in the inventory (hosts: in {_config_name(services)})"
    try:
        instance = await find_instance_by_name(services, name)
    except AwsFailure as exc:
        raise InputError(f"{unknown} and the EC2 lookup by tag Name failed ({exc})") from None
    if instance is None:
        raise InputError(f"{unknown} and no EC2 instance is tagged Name={name}")
    return HostTarget(
        name=name,
        instance_id=str(instance["InstanceId"]),
        source="ec2",
    )


def _config_name(services: Services) -> str:
    source = services.settings.source
    return "stabilize.yaml" if source.startswith("<") else source.rsplit("/", 1)[-1]


# -- diagnose ---------------------------------------------------------------------------------


async def diagnose(
    services: Services, host: str | HostTarget, *, runner: Runner | None = None
) -> Diagnosis:
    """Gather facts (SSH and AWS, concurrently) and run the rules. Raises InputError only for
    an unknown host; anything that could not be gathered is named in ``errors``."""
    target = host if isinstance(host, HostTarget) else await resolve_host(services, host)
    facts = await gather_facts(services, target, runner=runner)
    metrics = getattr(services, "metrics", None)
    if metrics is not None and hasattr(metrics, "diagnoses"):
        metrics.diagnoses.labels(facts.ssh_status, facts.aws_status).inc()
    result = evaluate(facts)
    return Diagnosis(target.name, facts, result.findings, result.recommendations)


async def diagnose_many(
    services: Services, hosts: Iterable[str | HostTarget], *, runner: Runner | None = None
) -> list[Diagnosis]:
    """Several hosts concurrently (one SSH connection each)."""
    return list(await asyncio.gather(*(diagnose(services, h, runner=runner) for h in hosts)))


async def diagnose_and_post(
    services: Services,
    host: str | HostTarget,
    *,
    requested_by: str,
    incident_id: str | int | None = None,
    thread_key: str | None = None,
    channel: str | None = None,
    runner: Runner | None = None,
) -> Diagnosis:
    """Diagnose, then in one transaction: store the diagnosis and its recommendations, audit
    ``diagnosis.posted`` (actor ``requested_by``), enqueue the message ``diagnosis:<id>``
    (in ``thread_key``'s thread when given). Unknown host: InputError, nothing stored."""
    diagnosis = await diagnose(services, host, runner=runner)
    record(
        services,
        diagnosis,
        requested_by=requested_by,
        incident_id=incident_id,
        thread_key=thread_key,
        channel=channel or services.settings.slack.channel,
        post=True,
    )
    return diagnosis


def record(
    services: Services,
    diagnosis: Diagnosis,
    *,
    requested_by: str,
    incident_id: str | int | None = None,
    thread_key: str | None = None,
    channel: str | None = None,
    post: bool = True,
) -> list[int]:
    """Store, audit and (with ``post``) enqueue ``diagnosis``; returns the recommendation ids.
    ``post=False`` is the CLI: audited as printed to the terminal, nothing sent to Slack."""
    from bot.blocks.diagnosis import diagnosis_blocks, diagnosis_text

    incident = None if incident_id is None else str(incident_id)
    now = iso()
    with services.db.transaction() as tx:
        cur = tx.execute(
            "INSERT INTO diagnoses (host, created_at, requested_by, incident_id, thread_key,"
            " channel, result) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                diagnosis.host,
                now,
                requested_by,
                incident,
                thread_key,
                channel if post else None,
                json.dumps(diagnosis.to_dict(), default=str),
            ),
        )
        diagnosis.id = int(cur.lastrowid or 0)
        # Approval requests go in the incident's thread, else in the diagnosis message's.
        rec_thread = thread_key or f"diagnosis:{diagnosis.id}"
        rec_ids = []
        for n, rec in enumerate(diagnosis.recommendations, start=1):
            cur = tx.execute(
                "INSERT INTO recommendations (diagnosis_id, position, host, runbook, params,"
                " reason, evidence, incident_id, thread_key, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    diagnosis.id,
                    n,
                    diagnosis.host,
                    rec.runbook,
                    json.dumps(rec.params, sort_keys=True),
                    rec.reason,
                    json.dumps(rec.evidence),
                    incident,
                    rec_thread,
                    now,
                ),
            )
            rec_ids.append(int(cur.lastrowid or 0))
        services.audit.append(
            requested_by,
            "diagnosis.posted",
            host=diagnosis.host,
            incident_id=incident,
            detail={
                "diagnosis_id": diagnosis.id,
                "posted_to": channel if post else "terminal",
                "facts": diagnosis.facts.summary(),
                "findings": [f"{f.severity}: {f.title}" for f in diagnosis.findings],
                "recommendations": [r.label() for r in diagnosis.recommendations],
                "errors": diagnosis.errors,
            },
            conn=tx,
        )
        if post:
            services.outbox.post(
                f"diagnosis:{diagnosis.id}",
                channel or services.settings.slack.channel,
                diagnosis_text(diagnosis),
                diagnosis_blocks(diagnosis, rec_ids),
                thread_key=thread_key,
                conn=tx,
            )
    return rec_ids


def load_recommendation(services: Services, rec_id: int | str) -> Recommendation | None:
    """The stored recommendation behind a button value, or None (unknown or malformed id)."""
    try:
        key = int(str(rec_id).strip())
    except ValueError:
        return None
    row = services.db.query_one("SELECT * FROM recommendations WHERE id = ?", (key,))
    if row is None:
        return None
    try:
        params = {str(k): str(v) for k, v in json.loads(row["params"]).items()}
        evidence = [str(e) for e in json.loads(row["evidence"])]
    except (ValueError, AttributeError):
        log.warning("recommendation %s has unreadable JSON", key)
        return None
    return Recommendation(
        id=int(row["id"]),
        diagnosis_id=int(row["diagnosis_id"]),
        runbook=row["runbook"],
        host=row["host"],
        params=params,
        reason=row["reason"],
        evidence=evidence,
        incident_id=row["incident_id"],
        thread_key=row["thread_key"],
    )
