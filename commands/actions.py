"""Button clicks, transport-agnostic (Bolt and ``stabilize shell``).

- ``approve…`` / ``reject…`` (value = request id): bot/approvals.py decides, from SQLite and
  the config, whatever the button said;
- ``recommend_<n>`` (value = recommendation id): asks for that runbook in the
  recommendation's thread.
"""

from __future__ import annotations

import asyncio
import logging
import re

from bot import approvals, runs
from bot.errors import StabilizeError
from bot.services import Services
from commands.reply import Reply, Responder, error
from commands.slash import reject_input

log = logging.getLogger(__name__)

_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


def handle_action(
    services: Services, *, user: str, channel: str, action_id: str, value: str
) -> Reply:
    """Answer a click by ``user`` on the button ``action_id`` carrying ``value``. Never raises.

    When the click completes the approvals, ``reply.update`` replaces the request message
    (no buttons: "approved by … — running") and ``reply.followup`` runs the runbook.
    """
    try:
        where = channel or None  # the channel the clicked message is in
        if action_id.startswith("approve"):
            decision = approvals.approve(services, request_id=value, user=user, channel=where)
            return _decided(services, decision)
        if action_id.startswith("reject"):
            decision = approvals.reject(services, request_id=value, user=user, channel=where)
            return _decided(services, decision)
        if action_id.startswith("recommend_"):
            return _recommend(services, user, value)
    except StabilizeError as exc:
        return error(str(exc))
    return reject_input(
        services, user, "button", f"This button ({action_id[:40]}) is not known to this bot."
    )


def _decided(services: Services, decision: approvals.Decision) -> Reply:
    reply = Reply(text=decision.message, error=decision.outcome in {"denied", "expired"})
    if decision.request is not None and decision.changed_message:
        reply.update = approvals.render(services, decision.request)
        reply.update_says_it_all = decision.outcome in {"started", "rejected"}
    if decision.started and decision.request is not None:
        request_id = decision.request.id

        async def followup(respond: Responder) -> None:
            await runs.run(services, request_id)

        reply.followup = followup
    return reply


def _recommend(services: Services, user: str, rec_id: str) -> Reply:
    if not _VALUE_RE.match(rec_id or ""):
        return reject_input(services, user, "button", "This recommendation button is malformed.")
    try:
        from bot.diagnosis import load_recommendation  # type: ignore[attr-defined]
    except ImportError:
        return error("Recommendations are not available in this build yet.")
    rec = load_recommendation(services, rec_id)
    if rec is None:
        return reject_input(
            services,
            user,
            "button",
            "That recommendation is no longer available; run `/stabilize <host>` again.",
        )

    async def followup(respond: Responder) -> None:
        try:
            request = await asyncio.to_thread(
                approvals.create_request,
                services,
                runbook=rec.runbook,
                host=rec.host,
                params=dict(rec.params),
                requested_by=user,
                reason=rec.reason,
                evidence=rec.evidence,
                incident_id=rec.incident_id,
                thread_key=rec.thread_key,
            )
        except StabilizeError as exc:  # already audited by create_request
            await respond(str(exc))
            return
        await respond(f"Approval request `{request.id}` for {rec.runbook} on {rec.host} posted.")

    return Reply(text=f"Asking for approval to run {rec.runbook} on {rec.host}…", followup=followup)
