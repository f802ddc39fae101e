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

from django.db.models import Q

from gatewaysite.clock import now
from usage.latency.histogram import Histogram
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
        rows = LatencySample.objects.filter(condition).values_list(*_SAMPLE_COLUMNS).iterator(chunk_size=5000)
        written += _save(aggregate(rows))
    return written


def refresh_since(*, since: datetime) -> int:
    """Recompute every rollup with samples from the minute of ``since`` on; return rows written."""
    rows = (
        LatencySample.objects.filter(created_at__gte=minute_of(since))
        .values_list(*_SAMPLE_COLUMNS)
        .iterator(chunk_size=5000)
    )
    return _save(aggregate(rows))


def rollup_recent(*, minutes: int = 5) -> int:
    """Re-roll the last ``minutes`` minutes (catches samples that arrived late)."""
    return refresh_since(since=now() - timedelta(minutes=minutes))
