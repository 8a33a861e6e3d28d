"""Slack deliveries already handled (by ``trigger_id``): a retried delivery is skipped."""

from __future__ import annotations

from datetime import timedelta

from bot.db import iso, utcnow
from bot.services import Services


def seen_delivery(services: Services, key: str) -> bool:
    """Record a Slack delivery (its trigger_id); True when it was handled before (a retry)."""
    with services.db.transaction() as tx:
        added = tx.execute(
            "INSERT OR IGNORE INTO slack_deliveries (key, seen_at) VALUES (?, ?)", (key, iso())
        ).rowcount
    return not added


def prune_deliveries(services: Services, older_than: float = 86400.0) -> None:
    cutoff = iso(utcnow() - timedelta(seconds=older_than))
    with services.db.transaction() as tx:
        tx.execute("DELETE FROM slack_deliveries WHERE seen_at < ?", (cutoff,))
