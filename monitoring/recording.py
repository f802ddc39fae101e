"""Metrics on the request path: plain in-process sums, exported when scraped.

Why not ``prometheus_client``'s metric objects: in multiprocess mode (the only way its
objects are right across gunicorn workers) a counter increment or a histogram
observation costs 5-6 microseconds (a lock and an mmap write per value; measured in
docs/observability.md); a completion updates about ten of them, ~50 us or 6% of the
CPU a request costs. Here one request takes one lock and updates dictionaries (~2 us).

Across processes: every process writes its cumulative sums to a snapshot file of its own
(``GATEWAY_METRICS_DIR``, one JSON file per process, replaced atomically) every
``GATEWAY_METRICS_FLUSH_SECONDS`` (1 s), from a background thread. ``/metrics``, whichever
worker serves it, writes its own file and adds up every file. This is
``prometheus_client``'s multiprocess design with a cheaper hot path: files of processes
that exited stay, so counters never go backwards; gunicorn's master empties the directory
when it starts. A process that is killed loses at most its last second of counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from bisect import bisect_left
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gatewaysite.locks import short_lock
from monitoring import catalog
from monitoring.context import current_request
from routing.cooldowns import cooldowns
from usage.events import LatencySampleData, UsageRecordData

logger = logging.getLogger(__name__)

Labels = tuple[str, ...]
_STATUS_TEXT = {code: str(code) for code in range(100, 600)}
_FALLBACK_REASONS = {429: "rate_limited", 504: "timeout", 408: "timeout"}


def _fallback_reason(http_status: int) -> str:
    reason = _FALLBACK_REASONS.get(http_status)
    if reason is not None:
        return reason
    return "client_error" if 400 <= http_status < 500 else "upstream_error"


class _Histogram:
    """Per-bucket counts (not cumulative), the +Inf bucket last, and the sum."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value


class ProcessMetrics:
    def __init__(self) -> None:
        self._lock = short_lock()
        self._thread_started = False
        self._token = uuid.uuid4().hex[:12]
        self.enabled = True
        self._clear()
        os.register_at_fork(after_in_child=self._after_fork)

    def _clear(self) -> None:
        self.counters: dict[str, dict[Labels, Any]] = {m.name: {} for m in catalog.RECORDED if m.kind == "counter"}
        self.histograms: dict[str, _Histogram] = {
            m.name: _Histogram(m.buckets) for m in catalog.RECORDED if m.kind == "histogram"
        }
        c = self.counters
        self._requests = c[catalog.REQUESTS.name]
        self._attempts = c[catalog.ATTEMPTS.name]
        self._fallbacks = c[catalog.FALLBACKS.name]
        self._tokens = c[catalog.TOKENS.name]
        self._cost = c[catalog.COST.name]
        self._unpriced = c[catalog.UNPRICED.name]
        self._http = c[catalog.HTTP_REQUESTS.name]
        self._refusals = c[catalog.REFUSALS.name]
        h = self.histograms
        self._upstream = h[catalog.UPSTREAM_LATENCY.name]
        self._ttft = h[catalog.TTFT.name]
        self._overhead = h[catalog.OVERHEAD.name]
        self._duration = h[catalog.HTTP_DURATION.name]

    def _after_fork(self) -> None:
        # A forked worker starts from zero (its parent's counts are the parent's) with its own file.
        self._lock = short_lock()
        self._thread_started = False
        self._token = uuid.uuid4().hex[:12]
        self._clear()

    def reset_for_tests(self) -> None:
        with self._lock:
            self._clear()

    # --- the hot path ---------------------------------------------------------------

    def usage(self, record: UsageRecordData, samples: list[LatencySampleData]) -> None:
        """One completion, from its usage record and its attempts' latency samples."""
        if not self._thread_started:
            self._start_flusher()
        model = record.model
        deployment = record.deployment
        provider = record.provider
        cost = record.cost_usd
        with self._lock:
            status = _STATUS_TEXT.get(record.http_status, "0")
            key = (model, deployment, provider, record.strategy, status, record.status)
            self._requests[key] = self._requests.get(key, 0) + 1
            if deployment:
                served = (model, deployment, provider)
                if cost is not None:
                    self._cost[served] = self._cost.get(served, Decimal(0)) + cost
                else:
                    self._unpriced[(deployment,)] = self._unpriced.get((deployment,), 0) + 1
                for kind, amount in (
                    ("prompt", record.prompt_tokens),
                    ("completion", record.completion_tokens),
                    ("cached", record.cached_tokens),
                    ("cache_creation", record.cache_creation_tokens),
                ):
                    if amount:
                        tkey = served + (kind,)
                        self._tokens[tkey] = self._tokens.get(tkey, 0) + amount
            last = len(samples)
            for index, sample in enumerate(samples, start=1):
                where = (sample.deployment, sample.provider)
                if sample.ok:
                    akey = where + ("ok",)
                    self._upstream.observe(where, sample.upstream_ms / 1000)
                    ttft = sample.ttft_ms
                    if ttft is not None:
                        self._ttft.observe(where, ttft / 1000)
                else:
                    akey = where + ("error",)
                    if index < last:
                        fkey = (where[0], _fallback_reason(sample.http_status))
                        self._fallbacks[fkey] = self._fallbacks.get(fkey, 0) + 1
                self._attempts[akey] = self._attempts.get(akey, 0) + 1
            if last and record.status == "ok":
                self._overhead.observe(("true" if record.stream else "false",), samples[-1].overhead_ms / 1000)

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        if not self._thread_started:
            self._start_flusher()
        with self._lock:
            key = (route, method, _STATUS_TEXT.get(status, "0"))
            self._http[key] = self._http.get(key, 0) + 1
            self._duration.observe((route,), seconds)

    def refusal(self, reason: str) -> None:
        with self._lock:
            self._refusals[(reason,)] = self._refusals.get((reason,), 0) + 1

    # --- export -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's sums, as JSON-ready data (Decimal as string)."""

        with self._lock:
            counters = {
                name: [
                    [list(labels), str(value) if isinstance(value, Decimal) else value] for labels, value in s.items()
                ]
                for name, s in self.counters.items()
            }
            histograms = {
                name: [[list(labels), list(counts)] for labels, counts in h.series.items()]
                for name, h in self.histograms.items()
            }
        return {
            "pid": os.getpid(),
            "token": self._token,
            "written": time.time(),
            "counters": counters,
            "histograms": histograms,
            "cooldown": sorted(cooldowns.status()),
        }

    def snapshot_path(self) -> Path:
        return Path(settings.GATEWAY["METRICS_DIR"]) / f"{os.getpid()}-{self._token}.json"

    def write_snapshot(self) -> None:
        path = self.snapshot_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(self.snapshot()))
        os.replace(temporary, path)

    def _start_flusher(self) -> None:
        interval = settings.GATEWAY["METRICS_FLUSH_SECONDS"]
        with self._lock:
            if self._thread_started:
                return
            self._thread_started = True
        if interval > 0:
            threading.Thread(target=self._flush_forever, args=(interval,), name="metrics-flush", daemon=True).start()

    def _flush_forever(self, interval: float) -> None:
        while True:
            time.sleep(interval)  # cooperative under the gevent worker
            try:
                self.write_snapshot()
            except OSError:
                logger.warning("metrics: could not write the snapshot file", exc_info=True)

    @property
    def token(self) -> str:
        return self._token


process_metrics = ProcessMetrics()


def observe_usage(record: UsageRecordData, samples: list[LatencySampleData]) -> None:
    """The request path's one call, where a completion's usage event is finished.

    Counts it in the metrics and hands the record to the request log line.
    """
    context = current_request.get()
    if context is not None:
        context.record = record
    if process_metrics.enabled:
        process_metrics.usage(record, samples)
