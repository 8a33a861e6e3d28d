"""``/stabilize`` — the slash command, transport-agnostic (Bolt and ``stabilize shell``).

    /stabilize <host>                              diagnose now; findings posted to the channel
    /stabilize run <runbook> <host> [key=value …]  ask for a runbook; posts an approval request
    /stabilize audit [host] [since]                an ephemeral summary of the audit log
    /stabilize help

``handle_command`` answers at once (the ack); slow work is the reply's ``followup``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from bot import approvals
from bot.audit import _ACTOR_RE
from bot.blocks import audit as audit_blocks
from bot.config import HOST_NAME_RE
from bot.durations import parse_duration
from bot.errors import InputError, StabilizeError
from bot.services import Services
from commands.reply import Reply, Responder, error
from runbooks.params import parse_pairs

log = logging.getLogger(__name__)

USAGE = (
    "Usage: `/stabilize <host>` · `/stabilize run <runbook> <host> [key=value …]`"
    " · `/stabilize audit [host] [since]` · `/stabilize help`"
)
RUN_USAGE = (
    "Usage: `/stabilize run <runbook> <host> [key=value …]`, e.g. `run add-swap web-1 size=4G`"
)
AUDIT_USAGE = "Usage: `/stabilize audit [host] [since]`, e.g. `audit web-1 24h`"
DEFAULT_SINCE = "24h"
_DURATION_RE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))*\Z")

HELP = "\n".join(
    [
        "*stabilize* — diagnose overloaded hosts and run approved runbooks.",
        "• `/stabilize <host>` — diagnose the host now; the findings are posted in the channel"
        " with a button per recommended runbook.",
        "• `/stabilize run <runbook> <host> [key=value …]` — ask for a runbook"
        " (e.g. `run add-swap prod-web-01 size=4G`); posts an approval request with the plan.",
        "• `/stabilize audit [host] [since]` — what happened (since like `24h`, `7d`).",
        "• `/stabilize help` — this.",
        "Runbooks: `add-swap` (size, path), `resize-instance` (type), `scale-asg` (desired or by).",
        "Full incident story: `stabilize audit timeline <incident-id>` on the server.",
    ]
)


def _actor(user: str) -> str:
    return user if _ACTOR_RE.match(user or "") else "system"


def reject_input(
    services: Services, user: str, what: str, message: str, *, host: str | None = None
) -> Reply:
    """One ephemeral line; nothing changed but an ``input.rejected`` audit row."""
    services.audit.append(
        _actor(user),
        "input.rejected",
        host=host if host and HOST_NAME_RE.match(host) else None,
        detail={"what": what, "error": message},
    )
    return error(message)


def handle_command(services: Services, *, user: str, channel: str, text: str) -> Reply:
    """Answer ``/stabilize <text>`` from ``user`` in ``channel``. Never raises."""
    words = (text or "").split()
    sub = words[0].lower() if words else "help"
    try:
        if sub == "help":
            return Reply(text=HELP)
        if sub == "run":
            return _run(services, user, channel, words[1:])
        if sub == "audit":
            return _audit(services, user, words[1:])
        if len(words) == 1:
            return _diagnose(services, user, words[0])
        return reject_input(
            services, user, "command", f"Unknown sub-command `{words[0][:40]}`. {USAGE}"
        )
    except StabilizeError as exc:
        return reject_input(services, user, "command", f"{exc}. {USAGE}")


# -- run -----------------------------------------------------------------------------------


def _run(services: Services, user: str, channel: str, words: list[str]) -> Reply:
    if len(words) < 2:
        return reject_input(services, user, "run", f"Which runbook on which host? {RUN_USAGE}")
    runbook, host, rest = words[0], words[1], words[2:]
    try:
        params = parse_pairs(rest)
        approvals.check_names(runbook, host, params)
        engine = services.engine
        if engine is None:
            return error(
                "Runbooks cannot run here: the runbook engine is not installed; nothing was"
                " requested."
            )
        get_runbook = getattr(engine, "get_runbook", None)
        if get_runbook is not None:
            get_runbook(runbook)  # unknown runbook: InputError naming the known ones
    except StabilizeError as exc:
        return reject_input(services, user, "run", f"{exc}. {RUN_USAGE}", host=host)

    async def followup(respond: Responder) -> None:
        try:
            request = await asyncio.to_thread(
                approvals.create_request,
                services,
                runbook=runbook,
                host=host,
                params=params,
                requested_by=user,
                reason="asked for by hand with /stabilize run (no diagnosis attached)",
            )
        except StabilizeError as exc:  # already audited by create_request
            await respond(f"{exc}. {RUN_USAGE}")
            return
        policy = approvals.policy_for(services.settings, runbook)
        await respond(
            f"Approval request `{request.id}` for {runbook} on {host} posted in"
            f" <#{request.channel}>; it needs {policy.required} approval(s) and expires at"
            f" {request.expires_at:%H:%M} UTC."
        )

    return Reply(text=f"Preparing an approval request for {runbook} on {host}…", followup=followup)


# -- audit -----------------------------------------------------------------------------------


def _audit(services: Services, user: str, words: list[str]) -> Reply:
    host: str | None = None
    since_text = DEFAULT_SINCE
    if len(words) > 2:
        return reject_input(services, user, "audit", f"Too many arguments. {AUDIT_USAGE}")
    for word in words:
        if _DURATION_RE.match(word.lower()):
            since_text = word.lower()
        elif HOST_NAME_RE.match(word) and host is None:
            host = word
        else:
            return reject_input(
                services, user, "audit", f"Not a host or a duration: {word[:40]!r}. {AUDIT_USAGE}"
            )
    since = timedelta(seconds=parse_duration(since_text))
    rows = services.audit.list(host=host, since=since, newest_first=True, limit=1000)
    text, blocks = audit_blocks.audit_summary(rows, host=host, since_text=since_text)
    return Reply(text=text, blocks=blocks)


# -- diagnose --------------------------------------------------------------------------------


def _diagnose(services: Services, user: str, host: str) -> Reply:
    if not HOST_NAME_RE.match(host):
        return reject_input(
            services,
            user,
            "diagnose",
            f"Unknown sub-command or invalid host {host[:40]!r}. {USAGE}",
        )
    try:
        from bot import diagnosis  # type: ignore[attr-defined]
    except ImportError:
        return error("Diagnosis is not available in this build yet; `/stabilize run` works.")
    known = diagnosis.known_host(services, host)
    channel = services.settings.slack.channel

    async def followup(respond: Responder) -> None:
        try:
            await diagnosis.diagnose_and_post(services, host, requested_by=user, channel=channel)
        except InputError as exc:
            services.audit.append(
                _actor(user),
                "input.rejected",
                host=host,
                detail={"what": "diagnose", "error": str(exc)},
            )
            await respond(f"{exc}. {USAGE}")
        except StabilizeError as exc:
            await respond(f"Diagnosis of {host} failed: {exc}")
        except Exception:  # keep the user informed whatever broke
            log.exception("diagnosis of %s failed", host)
            await respond(f"Diagnosis of {host} failed; the server log has the details.")

    if known:
        text = f"Diagnosing {host}… the findings will be posted in <#{channel}>."
    else:
        text = f"{host} is not in the inventory; looking it up by its EC2 Name tag…"
    return Reply(text=text, followup=followup)
