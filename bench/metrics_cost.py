"""Per-request cost of the observability hot path, measured with timeit (docs/observability.md).

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/metrics_cost.py

Compares, for one completion's usage event (one attempt): the gateway's in-process sums
(``ProcessMetrics.usage`` + ``.http``), the same updates through prometheus_client's
metric objects in its multiprocess mode (the mmap files), and the request's log line
(JSON-formatted, written to /dev/null).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-mp-")

import django  # noqa: E402

django.setup()

from monitoring import catalog  # noqa: E402
from monitoring.logs import JsonFormatter, RequestIdFilter  # noqa: E402
from monitoring.recording import ProcessMetrics  # noqa: E402

RECORD = {
    "model": "gpt-4o-mini",
    "deployment": "openai-gpt-4o-mini",
    "provider": "openai",
    "strategy": "cost",
    "status": "ok",
    "http_status": 200,
    "stream": False,
    "attempts": 1,
    "prompt_tokens": 812,
    "completion_tokens": 211,
    "cached_tokens": 0,
    "cache_creation_tokens": 0,
    "cost_usd": str(Decimal("0.000248400000")),
    "key_prefix": "abcd1234",
    "latency_ms": 812.4,
}
SAMPLES = [
    {
        "deployment": "openai-gpt-4o-mini",
        "provider": "openai",
        "ok": True,
        "http_status": 200,
        "upstream_ms": 810.2,
        "ttft_ms": None,
        "overhead_ms": 0.9,
    }
]


def ours() -> None:
    metrics = ProcessMetrics()
    metrics._thread_started = True  # no flusher thread in the benchmark

    def one() -> None:
        metrics.usage(RECORD, SAMPLES)
        metrics.http("v1/chat/completions", "POST", 200, 0.8124)

    return one


def prometheus_multiprocess() -> None:
    from prometheus_client import Counter, Histogram

    def make(metric: catalog.Metric):  # type: ignore[no-untyped-def]
        name = metric.name.removesuffix("_total")
        if metric.kind == "histogram":
            return Histogram(name, metric.help, metric.labels, buckets=metric.buckets)
        return Counter(name, metric.help, metric.labels)

    m = {metric.name: make(metric) for metric in catalog.RECORDED}

    def one() -> None:
        r = RECORD
        m[catalog.REQUESTS.name].labels(r["model"], r["deployment"], r["provider"], r["strategy"], "200", "ok").inc()
        m[catalog.COST.name].labels(r["model"], r["deployment"], r["provider"]).inc(float(r["cost_usd"]))
        m[catalog.TOKENS.name].labels(r["model"], r["deployment"], r["provider"], "prompt").inc(r["prompt_tokens"])
        m[catalog.TOKENS.name].labels(r["model"], r["deployment"], r["provider"], "completion").inc(
            r["completion_tokens"]
        )
        s = SAMPLES[0]
        m[catalog.ATTEMPTS.name].labels(s["deployment"], s["provider"], "ok").inc()
        m[catalog.UPSTREAM_LATENCY.name].labels(s["deployment"], s["provider"]).observe(s["upstream_ms"] / 1000)
        m[catalog.OVERHEAD.name].labels("false").observe(s["overhead_ms"] / 1000)
        m[catalog.HTTP_REQUESTS.name].labels("v1/chat/completions", "POST", "200").inc()
        m[catalog.HTTP_DURATION.name].labels("v1/chat/completions").observe(0.8124)

    return one


def log_line() -> None:
    logger = logging.getLogger("bench.request")
    logger.propagate = False
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger.addHandler(handler)
    fields = {
        k: RECORD[k] for k in ("model", "deployment", "provider", "prompt_tokens", "completion_tokens", "cost_usd")
    }

    def one() -> None:
        logger.info("%s %s %s", "POST", "/v1/chat/completions", 200, extra={"fields": fields})

    return one


def best_us(function, number: int = 50_000, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


if __name__ == "__main__":
    for name, factory in (
        ("in-process sums (this gateway)", ours),
        ("prometheus_client multiprocess", prometheus_multiprocess),
        ("request log line (JSON)", log_line),
    ):
        print(f"{name:34s} {best_us(factory()):7.2f} us per request")
