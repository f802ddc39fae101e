"""``/metrics``: every process's sums added up, plus gauges read when scraped.

Rendered by ``prometheus_client`` (metric families, text format). See recording.py for
how the processes' sums reach here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from monitoring import catalog
from monitoring.recording import process_metrics

logger = logging.getLogger(__name__)

# A process whose file is older than this many flush intervals no longer reports gauges.
LIVE_INTERVALS = 3


def _snapshots() -> list[dict[str, Any]]:
    """Every process's last snapshot file, this process's written now.

    Only files, never this process's live sums beside the others' files: each file only
    grows, so the total never goes down from one scrape to the next, whichever worker
    serves it (a live sum plus another worker's older file could, and Prometheus would
    read that as a counter reset).
    """
    try:
        process_metrics.write_snapshot()
    except OSError:
        logger.warning("metrics: could not write this process's snapshot", exc_info=True)
    found = []
    directory = Path(settings.GATEWAY["METRICS_DIR"])
    for path in directory.glob("*.json"):
        try:
            found.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):  # removed meanwhile; replacements are atomic
            logger.warning("metrics: skipping unreadable snapshot %s", path)
    return found


def merge(snapshots: list[dict[str, Any]]) -> tuple[dict[str, dict[tuple[str, ...], Any]], dict[str, dict]]:
    counters: dict[str, dict[tuple[str, ...], Any]] = {}
    histograms: dict[str, dict[tuple[str, ...], list[float]]] = {}
    for snap in snapshots:
        for name, series in snap.get("counters", {}).items():
            into = counters.setdefault(name, {})
            for labels, value in series:
                key = tuple(labels)
                amount = Decimal(value) if isinstance(value, str) else value
                into[key] = into.get(key, 0) + amount
        for name, series in snap.get("histograms", {}).items():
            into_h = histograms.setdefault(name, {})
            for labels, counts in series:
                key = tuple(labels)
                present = into_h.get(key)
                if present is None or len(present) != len(counts):
                    into_h[key] = list(counts)
                else:
                    into_h[key] = [a + b for a, b in zip(present, counts, strict=True)]
    return counters, histograms


def _live(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    horizon = time.time() - LIVE_INTERVALS * max(settings.GATEWAY["METRICS_FLUSH_SECONDS"], 1.0)
    return [s for s in snapshots if s.get("written", 0) >= horizon]


def _recorded_families(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    counters, histograms = merge(snapshots)
    for metric in catalog.RECORDED:
        if metric.kind == "counter":
            family = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
            for labels, value in sorted(counters.get(metric.name, {}).items()):
                family.add_metric(list(labels), float(value))
            yield family
        else:
            family_h = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
            for labels, counts in sorted(histograms.get(metric.name, {}).items()):
                cumulative, buckets = 0.0, []
                for bound, count in zip((*metric.buckets, float("inf")), counts[:-1], strict=True):
                    cumulative += count
                    buckets.append((floatToGoString(bound), cumulative))
                family_h.add_metric(list(labels), buckets, sum_value=counts[-1])
            yield family_h


def _gauge(metric: catalog.Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)


def _scraped_families(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    from monitoring import selectors
    from routing.config.cache import config_cache

    live = _live(snapshots)
    cooling = {name for snap in live for name in snap.get("cooldown", ())}
    snapshot = config_cache.current()
    cooldown = _gauge(catalog.COOLDOWN)
    for name in sorted(set(snapshot.deployments_by_name) | cooling):
        cooldown.add_metric([name], 1.0 if name in cooling else 0.0)
    yield cooldown

    utilization = _gauge(catalog.BUDGET_UTILIZATION)
    for budget in selectors.budget_utilization():
        utilization.add_metric([budget.scope, str(budget.scope_id), budget.name, budget.period], float(budget.ratio))
    yield utilization

    stream = selectors.usage_stream_state()
    if stream is not None:
        for metric, value in (
            (catalog.STREAM_LENGTH, stream.length),
            (catalog.STREAM_PENDING, stream.pending),
            (catalog.CONSUMER_LAG, stream.lag_seconds),
            (catalog.CONSUMER_LAG_ENTRIES, stream.lag_entries),
        ):
            gauge = _gauge(metric)
            gauge.add_metric([], float(value or 0))
            yield gauge
    dead = selectors.dead_letter_count()
    if dead is not None:
        gauge = _gauge(catalog.DEAD_LETTERS)
        gauge.add_metric([], float(dead))
        yield gauge
    version = _gauge(catalog.CONFIG_VERSION)
    version.add_metric([], float(snapshot.version))
    yield version
    processes = _gauge(catalog.PROCESSES)
    processes.add_metric([], float(len({s.get("token") for s in live})))
    yield processes


class _Collector:
    def collect(self) -> Iterator[Metric]:
        snapshots = _snapshots()
        yield from _recorded_families(snapshots)
        yield from _scraped_families(snapshots)


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)
