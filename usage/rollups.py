"""Hourly usage rollups (``UsageRollup``): what finance reports and the operator overview read.

Exact by construction (docs/scaling.md, "Rollups"):

- ``rollup_add`` runs in the transaction that inserts the usage records and is given only
  the records that insert really inserted (``INSERT ... ON CONFLICT DO NOTHING
  RETURNING``). A redelivered entry, a replayed spool or a replayed dead letter inserts
  nothing and so adds nothing; a late record (any hour, however old) adds itself to its
  hour's row. Sums are ``numeric`` additions of Decimals: no rounding anywhere.
- Cells are upserted in a fixed order (sorted by their key), so two consumers adding to
  the same cells wait for each other instead of deadlocking.
- ``rollup_rebuild`` recomputes hours from the raw records, replacing them whole (after
  a re-pricing, or by ``manage.py usage_rollups rebuild``); where raw records were dropped
  by retention the rollup is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncHour

DIMENSIONS = ("hour", "client_key_id", "key_name", "key_prefix", "team", "provider", "deployment", "model", "endpoint")
TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "cache_creation_1h_tokens")
METRICS = ("requests", "unpriced_requests", *TOKENS, "cost_usd")
TABLE = "usage_usagerollup"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _cells(records: Iterable[Any]) -> dict[tuple[Any, ...], list[Any]]:
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for r in records:
        key = (
            hour_of(r.created_at),
            r.client_key_id or 0,
            r.key_name,
            r.key_prefix,
            r.team,
            r.provider,
            r.deployment,
            r.model,
            r.endpoint,
        )
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = [0, 0, 0, 0, 0, 0, 0, Decimal(0)]
        cell[0] += 1
        if r.cost_usd is None:
            cell[1] += 1
        else:
            cell[7] += r.cost_usd
        cell[2] += r.prompt_tokens
        cell[3] += r.completion_tokens
        cell[4] += r.cached_tokens
        cell[5] += r.cache_creation_tokens
        cell[6] += r.cache_creation_1h_tokens
    return cells


def _upsert(cursor: Any, rows: list[tuple[Any, ...]], vendor: str) -> None:
    columns = (*DIMENSIONS, *METRICS)
    width = len(columns)
    row_sql = "(" + ", ".join(["%s"] * width) + ")"
    add = ", ".join(f"{m} = {TABLE}.{m} + excluded.{m}" for m in METRICS)
    step = 500 if vendor == "sqlite" else 2000  # SQLite: bound parameters per statement
    for at in range(0, len(rows), step):
        chunk = rows[at : at + step]
        params: list[Any] = []
        for row in chunk:
            params.extend(row)
        cursor.execute(
            f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES {', '.join([row_sql] * len(chunk))} "
            f"ON CONFLICT ({', '.join(DIMENSIONS)}) DO UPDATE SET {add}",
            params,
        )


def rollup_add(records: Iterable[Any], *, using: str = "default") -> int:
    """Add inserted usage records to their hourly cells; call inside the inserting transaction."""
    cells = _cells(records)
    if not cells:
        return 0
    conn = connections[using]
    hour_field = _hour_field()
    rows = []
    for key in sorted(cells, key=lambda k: (k[0].isoformat(), *k[1:])):
        hour = hour_field.get_db_prep_save(key[0], conn)
        cell = cells[key]
        cost = conn.ops.adapt_decimalfield_value(cell[7], 30, 12)
        rows.append((hour, *key[1:], *cell[:7], cost))
    with conn.cursor() as cursor:
        _upsert(cursor, rows, conn.vendor)
    return len(rows)


def _hour_field() -> Any:
    from usage.models import UsageRollup

    return UsageRollup._meta.get_field("hour")


def rollup_rebuild(
    start: datetime, end: datetime, *, using: str = "default", models: tuple[Any, Any] | None = None
) -> int:
    """Recompute the hours in ``[start, end)`` (widened to whole hours) from the raw records.

    ``models``: (record, rollup) model classes, for a migration's historical models.
    """
    if models is None:
        from usage import models as usage_models

        models = (usage_models.UsageRecord, usage_models.UsageRollup)
    UsageRecord, UsageRollup = models  # noqa: N806

    start, end = hour_of(start), hour_of(end - timedelta(microseconds=1)) + timedelta(hours=1)
    records = UsageRecord.objects.using(using).filter(created_at__gte=start, created_at__lt=end)
    grouped = (
        records.annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values(
            "hour", "client_key_id", "key_name", "key_prefix", "team", "provider", "deployment", "model", "endpoint"
        )
        .annotate(
            requests=Count("id"),
            unpriced_requests=Count("id", filter=Q(cost_usd__isnull=True)),
            **{t: Sum(t) for t in TOKENS},
            cost_usd=Sum("cost_usd"),
        )
        .order_by()
    )
    # Summed and written by the database in one statement: a month of a large deployment
    # is millions of cells, which Python would hold all at once.
    query, params = grouped.query.get_compiler(using=using).as_sql()
    columns = (*DIMENSIONS, *METRICS)
    picked = [
        "COALESCE(client_key_id, 0)" if c == "client_key_id" else "COALESCE(cost_usd, 0)" if c == "cost_usd" else c
        for c in columns
    ]
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        UsageRollup.objects.using(using).filter(hour__gte=start, hour__lt=end).delete()
        cursor.execute(
            f"INSERT INTO {UsageRollup._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(picked)} FROM ({query}) AS summed",
            params,
        )
        return max(cursor.rowcount, 0)


def rollup_rebuild_all(*, using: str = "default", models: tuple[Any, Any] | None = None) -> int:
    """Every hour that has raw records (the migration that introduced rollups)."""
    if models is None:
        from usage.models import UsageRecord, UsageRollup

        models = (UsageRecord, UsageRollup)
    span = models[0].objects.using(using).aggregate(first=Min("created_at"), last=Max("created_at"))
    if span["first"] is None:
        return 0
    written = 0
    at = hour_of(span["first"])
    while at <= span["last"]:
        written += rollup_rebuild(at, at + timedelta(days=30), using=using, models=models)
        at += timedelta(days=30)
    return written


def rollup_differences(start: datetime, end: datetime) -> list[datetime]:
    """Hours in ``[start, end)`` whose rollup cells differ from the sums of their raw records."""
    from usage.models import UsageRecord, UsageRollup

    keys = ("hour", "client_key_id", "key_name", "key_prefix", "team", "provider", "deployment", "model", "endpoint")
    raw: dict[tuple[Any, ...], tuple[Any, ...]] = {  # (hour, *dimensions) -> metrics
        tuple(row[k] if k != "client_key_id" else row[k] or 0 for k in keys): tuple(
            row[m] if m != "cost_usd" else row[m] or Decimal(0) for m in METRICS
        )
        for row in UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values(*keys)
        .annotate(
            requests=Count("id"),
            unpriced_requests=Count("id", filter=Q(cost_usd__isnull=True)),
            **{t: Sum(t) for t in TOKENS},
            cost_usd=Sum("cost_usd"),
        )
        .order_by()
    }
    rolled: dict[tuple[Any, ...], tuple[Any, ...]] = {
        tuple(row[k] for k in keys): tuple(row[m] for m in METRICS)
        for row in UsageRollup.objects.filter(hour__gte=start, hour__lt=end).values(*keys, *METRICS)
    }
    hours: set[datetime] = {key[0] for key in raw.keys() ^ rolled.keys()}  # keys start with the hour
    return sorted(hours | {k[0] for k in raw if k in rolled and raw[k] != rolled[k]})
