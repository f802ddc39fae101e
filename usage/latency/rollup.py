"""Per-deployment, per-minute latency rollups, recomputed from the raw samples.

A rollup row is a pure function of the raw ``LatencySample`` rows of its (deployment,
minute): it is recomputed from all of them and upserted (``bulk_create`` with
``update_conflicts``). Running a refresh twice, or again after a redelivered batch
(whose duplicate samples the unique constraint dropped), writes the same row.

What a row holds (latency figures are ``upstream_ms``, the provider's part, over
*successful* attempts; a failed attempt's time says little about the provider's speed
and is counted in ``error_count`` instead):

- ``count``: all attempts, ``error_count``: failed ones;
- ``sum_ms`` / ``min_ms`` / ``max_ms`` / ``histogram`` over successful attempts
  (``count - error_count`` of them);
- ``ttft_*``: time to first token of successful streamed attempts;
- ``overhead_sum_ms``: what the gateway added, summed over successful attempts.

Two refreshes racing on one bucket can leave the older computation in place; the
periodic ``rollup_recent`` re-rolls the last minutes and settles it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Q, QuerySet

from gatewaysite.clock import now
from usage.latency.histogram import EDGES, Histogram
from usage.models import LatencyRollup, LatencySample

MINUTE = timedelta(minutes=1)
MINUTES_PER_QUERY = 30

# What a rollup row holds besides its key (deployment, minute): rewritten on every
# refresh, and read in this order by selectors.py.
FIGURES = (
    "provider",
    "count",
    "error_count",
    "sum_ms",
    "min_ms",
    "max_ms",
    "histogram",
    "ttft_count",
    "ttft_sum_ms",
    "ttft_min_ms",
    "ttft_max_ms",
    "ttft_histogram",
    "overhead_sum_ms",
)

_SAMPLE_COLUMNS = ("deployment", "provider", "created_at", "ok", "upstream_ms", "ttft_ms", "overhead_ms")
SampleRow = tuple[str, str, datetime, bool, float, float | None, float]


def minute_of(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class _Accumulator:
    provider: str = ""
    count: int = 0
    errors: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    histogram: Histogram = field(default_factory=Histogram)
    ttft_count: int = 0
    ttft_sum_ms: float = 0.0
    ttft_min_ms: float | None = None
    ttft_max_ms: float | None = None
    ttft_histogram: Histogram = field(default_factory=Histogram)
    overhead_sum_ms: float = 0.0

    def add(self, provider: str, ok: bool, upstream_ms: float, ttft_ms: float | None, overhead_ms: float) -> None:
        self.provider = provider
        self.count += 1
        if not ok:
            self.errors += 1
            return
        self.sum_ms += upstream_ms
        self.min_ms = upstream_ms if self.min_ms is None else min(self.min_ms, upstream_ms)
        self.max_ms = upstream_ms if self.max_ms is None else max(self.max_ms, upstream_ms)
        self.histogram.add(upstream_ms)
        self.overhead_sum_ms += overhead_ms
        if ttft_ms is not None:
            self.ttft_count += 1
            self.ttft_sum_ms += ttft_ms
            self.ttft_min_ms = ttft_ms if self.ttft_min_ms is None else min(self.ttft_min_ms, ttft_ms)
            self.ttft_max_ms = ttft_ms if self.ttft_max_ms is None else max(self.ttft_max_ms, ttft_ms)
            self.ttft_histogram.add(ttft_ms)

    def row(self, deployment: str, minute: datetime) -> LatencyRollup:
        return LatencyRollup(
            deployment=deployment,
            provider=self.provider,
            minute=minute,
            count=self.count,
            error_count=self.errors,
            sum_ms=round(self.sum_ms, 3),
            min_ms=self.min_ms,
            max_ms=self.max_ms,
            histogram=self.histogram.sparse(),
            ttft_count=self.ttft_count,
            ttft_sum_ms=round(self.ttft_sum_ms, 3),
            ttft_min_ms=self.ttft_min_ms,
            ttft_max_ms=self.ttft_max_ms,
            ttft_histogram=self.ttft_histogram.sparse(),
            overhead_sum_ms=round(self.overhead_sum_ms, 3),
        )


def aggregate(rows: Iterable[SampleRow]) -> list[LatencyRollup]:
    """Rollup rows (unsaved) of the given raw sample rows, one per (deployment, minute)."""
    accumulators: dict[tuple[str, datetime], _Accumulator] = {}
    for deployment, provider, created_at, ok, upstream_ms, ttft_ms, overhead_ms in rows:
        key = (deployment, minute_of(created_at))
        accumulator = accumulators.get(key)
        if accumulator is None:
            accumulator = accumulators[key] = _Accumulator()
        accumulator.add(provider, ok, upstream_ms, ttft_ms, overhead_ms)
    return [acc.row(deployment, minute) for (deployment, minute), acc in accumulators.items()]


def _save(rollups: list[LatencyRollup]) -> int:
    if rollups:
        LatencyRollup.objects.bulk_create(
            rollups,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["deployment", "minute"],
            update_fields=FIGURES,
        )
    return len(rollups)


def _chunks(items: list[datetime], size: int) -> Iterator[list[datetime]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _aggregate_in_database(samples: QuerySet[LatencySample]) -> list[LatencyRollup]:
    """``aggregate`` of ``samples``, summed by Postgres: the same rows, without loading a sample.

    The consumer refreshes the buckets of every batch, and a bucket holds all of its
    minute's samples: at 5,000 events a second a refresh late in the minute reads a few
    hundred thousand samples. Loading and adding them in Python had cost most of the
    consumer's time (docs/scaling.md); Postgres answers one row per bucket and one per
    non-empty histogram bucket. Histogram buckets are ``width_bucket`` over the same
    edges as ``bucket_of`` (both count the edges at or below the value), so the
    histograms are identical; sums may differ from Python's in the last bits of a float
    (another order of additions) before ``row`` rounds them.
    """
    source, params = samples.values_list(*_SAMPLE_COLUMNS).query.sql_with_params()
    edges = list(EDGES)
    bucket = "CASE WHEN {0} < 0 THEN 0 ELSE width_bucket({0}, %s::float8[]) END"
    sql = f"""
        WITH s AS MATERIALIZED (
            SELECT deployment, date_trunc('minute', created_at, 'UTC') AS minute, provider, ok, upstream_ms,
                ttft_ms, overhead_ms
            FROM ({source}) AS picked
        )
        SELECT deployment, minute, 0, max(provider), count(*), count(*) FILTER (WHERE NOT ok),
            sum(upstream_ms) FILTER (WHERE ok), min(upstream_ms) FILTER (WHERE ok),
            max(upstream_ms) FILTER (WHERE ok), count(ttft_ms) FILTER (WHERE ok),
            sum(ttft_ms) FILTER (WHERE ok), min(ttft_ms) FILTER (WHERE ok), max(ttft_ms) FILTER (WHERE ok),
            sum(overhead_ms) FILTER (WHERE ok)
        FROM s GROUP BY deployment, minute
        UNION ALL
        SELECT deployment, minute, 1, NULL, {bucket.format("upstream_ms")}, count(*),
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM s WHERE ok GROUP BY deployment, minute, 5
        UNION ALL
        SELECT deployment, minute, 2, NULL, {bucket.format("ttft_ms")}, count(*),
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM s WHERE ok AND ttft_ms IS NOT NULL GROUP BY deployment, minute, 5
    """
    accumulators: dict[tuple[str, datetime], _Accumulator] = {}
    histograms: list[tuple[str, datetime, int, int, int]] = []
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, edges, edges])
        for deployment, minute, kind, provider, *figures in cursor.fetchall():
            if kind:
                histograms.append((deployment, minute, kind, figures[0], figures[1]))
                continue
            count, errors, sum_ms, min_ms, max_ms, ttft_count, ttft_sum, ttft_min, ttft_max, overhead = figures
            accumulators[(deployment, minute)] = _Accumulator(
                provider=provider,
                count=count,
                errors=errors,
                sum_ms=sum_ms or 0.0,
                min_ms=min_ms,
                max_ms=max_ms,
                ttft_count=ttft_count,
                ttft_sum_ms=ttft_sum or 0.0,
                ttft_min_ms=ttft_min,
                ttft_max_ms=ttft_max,
                overhead_sum_ms=overhead or 0.0,
            )
    for deployment, minute, kind, index, count in histograms:
        accumulator = accumulators[(deployment, minute)]
        histogram = accumulator.histogram if kind == 1 else accumulator.ttft_histogram
        histogram.counts[index] = count
        histogram.total += count
    return [acc.row(deployment, minute) for (deployment, minute), acc in accumulators.items()]


def _aggregated(samples: QuerySet[LatencySample]) -> list[LatencyRollup]:
    if connection.vendor == "postgresql":
        return _aggregate_in_database(samples)
    return aggregate(samples.values_list(*_SAMPLE_COLUMNS).iterator(chunk_size=5000))


def refresh_buckets(buckets: Iterable[tuple[str, datetime]]) -> int:
    """Recompute the rollups of the given (deployment, minute) buckets; return rows written.

    A bucket without raw samples (already pruned) keeps its rollup untouched.
    """
    by_minute: dict[datetime, set[str]] = {}
    for deployment, minute in buckets:
        by_minute.setdefault(minute_of(minute), set()).add(deployment)
    written = 0
    for minutes in _chunks(sorted(by_minute), MINUTES_PER_QUERY):
        condition = Q()
        for minute in minutes:
            condition |= Q(created_at__gte=minute, created_at__lt=minute + MINUTE, deployment__in=by_minute[minute])
        written += _save(_aggregated(LatencySample.objects.filter(condition)))
    return written


def refresh_since(*, since: datetime) -> int:
    """Recompute every rollup with samples from the minute of ``since`` on; return rows written."""
    return _save(_aggregated(LatencySample.objects.filter(created_at__gte=minute_of(since))))


def rollup_recent(*, minutes: int = 5) -> int:
    """Re-roll the last ``minutes`` minutes (catches samples that arrived late)."""
    return refresh_since(since=now() - timedelta(minutes=minutes))
