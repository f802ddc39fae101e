"""Spend per day by team, key and model for the operator overview (docs/observability.md).

Read from the hourly usage rollups (``usage.models.UsageRollup``, the one home of
rollups; usage/rollups.py): they are kept exact as records are ingested, late ones
included, so "today" and "this month" are sums over at most ~750 hours of cells, never a
scan of the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from gatewaysite.clock import now

_GROUP = ("team", "client_key_id", "key_name", "key_prefix", "model")


def _aggregate(start: datetime, end: datetime) -> list[dict[str, Any]]:
    from usage.models import UsageRollup

    return list(
        UsageRollup.objects.filter(hour__gte=start, hour__lt=end)
        .values(*_GROUP)
        .annotate(requests=Sum("requests"), unpriced_requests=Sum("unpriced_requests"), cost_usd=Sum("cost_usd"))
        .order_by()
    )


@dataclass
class Totals:
    cost_usd: Decimal = Decimal(0)
    requests: int = 0
    unpriced_requests: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.cost_usd += row["cost_usd"] or Decimal(0)
        self.requests += row["requests"]
        self.unpriced_requests += row["unpriced_requests"]


@dataclass
class SpendBreakdown:
    total: Totals = field(default_factory=Totals)
    by_team: dict[str, Totals] = field(default_factory=dict)
    by_key: dict[str, Totals] = field(default_factory=dict)
    by_model: dict[str, Totals] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.total.add(row)
        key = f"{row['key_name']} ({row['key_prefix']})" if row["key_prefix"] else (row["key_name"] or "(none)")
        for into, name in (
            (self.by_team, row["team"] or "(no team)"),
            (self.by_key, key),
            (self.by_model, row["model"]),
        ):
            into.setdefault(name, Totals()).add(row)


def spend_summary(*, at: datetime | None = None) -> tuple[SpendBreakdown, SpendBreakdown]:
    """(today, this month) by team, key and model."""
    moment = (at or now()).astimezone(UTC)
    today = datetime.combine(moment.date(), time(0), tzinfo=UTC)
    month_start = today.replace(day=1)
    today_spend, month_spend = SpendBreakdown(), SpendBreakdown()
    for row in _aggregate(today, today + timedelta(days=1)):
        today_spend.add(row)
        month_spend.add(row)
    for row in _aggregate(month_start, today):
        month_spend.add(row)
    return today_spend, month_spend
