"""Reads of latency statistics: per provider and deployment over a window, from rollups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from usage.latency.histogram import Histogram
from usage.latency.rollup import FIGURES, minute_of
from usage.models import LatencyRollup

_COLUMNS = ("deployment", *FIGURES)  # LatencyStats.add_row unpacks them in this order


def _low(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _high(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _ms(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


@dataclass
class _Series:
    count: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    histogram: Histogram = field(default_factory=Histogram)

    def add(self, count: int, sum_ms: float, min_ms: float | None, max_ms: float | None, sparse: Any) -> None:
        self.count += count
        self.sum_ms += sum_ms
        self.min_ms = _low(self.min_ms, min_ms)
        self.max_ms = _high(self.max_ms, max_ms)
        self.histogram.merge(sparse or ())

    def absorb(self, other: _Series) -> None:
        self.add(other.count, other.sum_ms, other.min_ms, other.max_ms, other.histogram.sparse())

    def summary(self) -> dict[str, Any]:
        def pct(q: float) -> float | None:
            return _ms(self.histogram.percentile(q, low=self.min_ms, high=self.max_ms))

        return {
            "count": self.count,
            "avg": _ms(self.sum_ms / self.count) if self.count else None,
            "min": _ms(self.min_ms),
            "max": _ms(self.max_ms),
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
        }


@dataclass
class LatencyStats:
    """Merged rollups of one deployment (or one provider): what the API reports."""

    provider: str = ""
    samples: int = 0
    errors: int = 0
    latency: _Series = field(default_factory=_Series)
    ttft: _Series = field(default_factory=_Series)
    overhead_sum_ms: float = 0.0

    def add_row(self, row: tuple[Any, ...]) -> None:
        (
            _,
            provider,
            count,
            errors,
            sum_ms,
            min_ms,
            max_ms,
            histogram,
            t_count,
            t_sum,
            t_min,
            t_max,
            t_histogram,
            overhead,
        ) = row
        self.provider = provider
        self.samples += count
        self.errors += errors
        self.latency.add(count - errors, sum_ms, min_ms, max_ms, histogram)
        self.ttft.add(t_count, t_sum, t_min, t_max, t_histogram)
        self.overhead_sum_ms += overhead

    def absorb(self, other: LatencyStats) -> None:
        self.samples += other.samples
        self.errors += other.errors
        self.latency.absorb(other.latency)
        self.ttft.absorb(other.ttft)
        self.overhead_sum_ms += other.overhead_sum_ms

    def summary(self) -> dict[str, Any]:
        ok = self.latency.count
        return {
            "samples": self.samples,
            "errors": self.errors,
            "error_rate": round(self.errors / self.samples, 4) if self.samples else None,
            "latency_ms": self.latency.summary(),
            "ttft_ms": self.ttft.summary(),
            "overhead_ms_avg": _ms(self.overhead_sum_ms / ok) if ok else None,
        }


def latency_by_deployment(*, since: datetime, deployments: Iterable[str] | None = None) -> dict[str, LatencyStats]:
    """Deployment -> merged stats of the rollups from the minute of ``since`` on."""
    rows = LatencyRollup.objects.filter(minute__gte=minute_of(since))
    if deployments is not None:
        rows = rows.filter(deployment__in=list(deployments))
    stats: dict[str, LatencyStats] = {}
    for row in rows.values_list(*_COLUMNS).iterator(chunk_size=2000):
        stats.setdefault(row[0], LatencyStats()).add_row(row)
    return stats


def latency_report(
    *, since: datetime, deployments: Iterable[str] | None = None, models: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Per provider (sorted by name): merged stats, and its deployments' stats."""
    models = models or {}
    by_provider: dict[str, list[tuple[str, LatencyStats]]] = {}
    for name, entry in latency_by_deployment(since=since, deployments=deployments).items():
        by_provider.setdefault(entry.provider, []).append((name, entry))
    report = []
    for provider in sorted(by_provider):
        total = LatencyStats()
        items = []
        for name, entry in sorted(by_provider[provider]):
            total.absorb(entry)
            items.append({"deployment": name, "model": models.get(name), **entry.summary()})
        report.append({"provider": provider, **total.summary(), "deployments": items})
    return report
