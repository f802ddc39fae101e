"""Reads for operators: budgets, the usage stream, dead letters (metrics, readiness, overview)."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Sum

from gatewaysite.clock import now
from gatewaysite.redis import get_redis


@dataclass(frozen=True)
class BudgetUse:
    scope: str  # key or team
    scope_id: int
    name: str
    period: str  # day or month
    limit_usd: Decimal
    spent_usd: Decimal

    @property
    def ratio(self) -> Decimal:
        return self.spent_usd / self.limit_usd if self.limit_usd > 0 else Decimal(0)


def _spent_in_database(scope: str, scope_id: int, period: str, at: datetime) -> Decimal:
    from usage.budgets import period_bounds
    from usage.models import UsageRecord

    start, end = period_bounds(period, at)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
    if scope == "key":
        records = records.filter(client_key_id=scope_id)
    else:
        records = records.filter(client_key__team_id=scope_id)
    return records.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def budget_utilization(*, at: datetime | None = None) -> list[BudgetUse]:
    """Every key (not revoked) and team with a budget: spend of the current period.

    Read from the budget counters the request path keeps (Redis, or the process in the
    embedded default), so this is one round trip; a counter that is missing (Redis was
    emptied) is summed from the usage records instead.
    """
    from accounts.models import ClientKey, Team
    from usage.budgets import Budget
    from usage.cost import from_picodollars
    from usage.recorder import local_counters

    moment = at or now()
    budgets: list[Budget] = [
        Budget("key", pk, f"{name} ({prefix})", limit, period or "month")
        for pk, name, prefix, limit, period in ClientKey.objects.filter(
            budget_usd__isnull=False, revoked=False
        ).values_list("id", "name", "prefix", "budget_usd", "budget_period")
        if limit is not None  # the filter's promise, spelled out for the type checker
    ]
    budgets += [
        Budget("team", pk, name, limit, period or "month")
        for pk, name, limit, period in Team.objects.filter(budget_usd__isnull=False).values_list(
            "id", "name", "budget_usd", "budget_period"
        )
        if limit is not None
    ]
    if not budgets:
        return []
    names = [b.counters(moment).spent for b in budgets]
    client = get_redis()
    values = client.mget(names) if client is not None else [local_counters.get(n) for n in names]
    found = []
    for budget, value in zip(budgets, values, strict=True):
        if value is None:
            spent = _spent_in_database(budget.scope, budget.scope_id, budget.period, moment)
        else:
            spent = from_picodollars(int(value))
        found.append(BudgetUse(budget.scope, budget.scope_id, budget.name, budget.period, budget.limit_usd, spent))
    return found


@dataclass(frozen=True)
class StreamState:
    length: int
    pending: int
    lag_entries: int | None  # never delivered to the consumer group (Redis 7+)
    lag_seconds: float  # age of the oldest event still in the stream


def usage_stream_state() -> StreamState | None:
    """The usage stream's backlog; None in the embedded default (no stream)."""
    client = get_redis()
    if client is None:
        return None
    from usage.consumer import GROUP

    stream = settings.GATEWAY["USAGE_STREAM"]
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xrange(stream, count=1)
    pipe.xinfo_groups(stream)
    length, oldest, groups = pipe.execute(raise_on_error=False)
    if isinstance(length, Exception):
        raise length
    pending = 0
    lag_entries: int | None = int(length)  # no consumer group yet: nothing was ever read
    for group in groups if isinstance(groups, list) else ():
        if group.get("name") in (GROUP, GROUP.encode()):
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            lag_entries = int(lag) if lag is not None else None
    lag_seconds = 0.0
    if isinstance(oldest, list) and oldest:
        entry_id = oldest[0][0]
        millis = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
        lag_seconds = max(0.0, time.time() - millis / 1000)
    return StreamState(length=int(length), pending=pending, lag_entries=lag_entries, lag_seconds=round(lag_seconds, 3))


def dead_letter_model() -> Any | None:
    """``usage.models.UsageDeadLetter`` when this build has it, else None."""
    models = importlib.import_module("usage.models")
    return getattr(models, "UsageDeadLetter", None)


def dead_letter_count() -> int | None:
    model = dead_letter_model()
    return None if model is None else int(model.objects.count())
