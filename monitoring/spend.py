"""Spend per day by team, key and model: the rollup the overview reads (docs/observability.md).

- ``spend_rollup_refresh(days=...)`` recomputes whole days from the usage records in one
  transaction: idempotent, and exact for the records present when it ran.
- The Celery task ``monitoring.rollup_spend`` (every minute) recomputes yesterday and
  today, so records that arrive late (a drained backlog, a replayed spool) are counted
  within a minute, up to a day late. ``manage.py rollup_spend --since DATE`` recomputes
  older days after replaying something older.
- ``spend_summary`` answers "today" and "this month": closed days from the rollup
  (computing any day that has none yet), today straight from the records of today
  (an indexed range on ``created_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, Sum

from gatewaysite.clock import now
from monitoring.models import SpendRollup, SpendRollupDay
from usage.models import UsageRecord

_GROUP = ("team", "client_key_id", "key_name", "key_prefix", "model")


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _aggregate(start: datetime, end: datetime) -> list[dict[str, Any]]:

    return list(
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .values(*_GROUP)
        .annotate(
            requests=Count("id"),
            unpriced_requests=Count("id", filter=Q(cost_usd__isnull=True)),
            cost_usd=Sum("cost_usd"),
        )
        .order_by()
    )


def spend_rollup_refresh(*, days: Iterable[date]) -> int:
    """Recompute the rollup of each day; return the rows written."""
    written = 0
    for day in sorted(set(days)):
        start, end = _day_bounds(day)
        rows = _aggregate(start, end)
        with transaction.atomic():
            SpendRollup.objects.filter(day=day).delete()
            SpendRollup.objects.bulk_create(
                [
                    SpendRollup(
                        day=day,
                        team=row["team"],
                        client_key_id=row["client_key_id"],
                        key_name=row["key_name"],
                        key_prefix=row["key_prefix"],
                        model=row["model"],
                        requests=row["requests"],
                        unpriced_requests=row["unpriced_requests"],
                        cost_usd=row["cost_usd"] or Decimal(0),
                    )
                    for row in rows
                ],
                batch_size=1000,
            )
            SpendRollupDay.objects.update_or_create(
                day=day, defaults={"refreshed_at": now(), "records": sum(r["requests"] for r in rows)}
            )
        written += len(rows)
    return written


def spend_rollup_recent() -> int:
    today = now().astimezone(UTC).date()
    return spend_rollup_refresh(days=[today - timedelta(days=1), today])


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
    today = moment.date()
    month_start = today.replace(day=1)
    closed = [month_start + timedelta(days=n) for n in range((today - month_start).days)]
    done = set(SpendRollupDay.objects.filter(day__in=closed).values_list("day", flat=True))
    missing = [day for day in closed if day not in done]
    if missing:
        spend_rollup_refresh(days=missing)  # first view, or no Celery beat (the embedded default)
    today_rows = _aggregate(*_day_bounds(today))
    today_spend, month_spend = SpendBreakdown(), SpendBreakdown()
    for row in today_rows:
        today_spend.add(row)
        month_spend.add(row)
    for row in SpendRollup.objects.filter(day__gte=month_start, day__lt=today).values(
        *_GROUP, "requests", "unpriced_requests", "cost_usd"
    ):
        month_spend.add(row)
    return today_spend, month_spend
