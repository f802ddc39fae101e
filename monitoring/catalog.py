"""Every metric ``/metrics`` exports: name, type, labels, help. docs/observability.md has the table.

Labels are bounded by configuration, never by requests: deployments, models, providers
and strategies come from the configuration snapshot (a request for an unknown model is
refused before anything is counted), statuses are HTTP codes, and routes are URL
patterns, not paths. Nothing carries a request id, a key secret or a client-sent string.
"""

from __future__ import annotations

from dataclasses import dataclass

# Seconds. Upstream calls of LLMs range from tens of milliseconds to minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# What the gateway adds: sub-millisecond to tens of milliseconds.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter, histogram, gauge
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


# --- recorded on the request path (per process, summed across processes at scrape time) ---
REQUESTS = Metric(
    "gateway_requests_total",
    "counter",
    ("model", "deployment", "provider", "strategy", "status", "outcome"),
    "Chat completions served, by the deployment that answered last; status is the HTTP status, "
    "outcome ok, error or client_closed.",
)
ATTEMPTS = Metric(
    "gateway_upstream_attempts_total",
    "counter",
    ("deployment", "provider", "outcome"),
    "Upstream calls (fallbacks included), outcome ok or error.",
)
FALLBACKS = Metric(
    "gateway_fallbacks_total",
    "counter",
    ("deployment", "reason"),
    "Failed attempts after which the next candidate was tried, by the deployment that failed and why "
    "(rate_limited, timeout, upstream_error, client_error).",
)
UPSTREAM_LATENCY = Metric(
    "gateway_upstream_latency_seconds",
    "histogram",
    ("deployment", "provider"),
    "Upstream call duration of successful attempts, connect to last byte.",
    LATENCY_BUCKETS,
)
TTFT = Metric(
    "gateway_time_to_first_token_seconds",
    "histogram",
    ("deployment", "provider"),
    "Streams: time from the upstream call to its first chunk.",
    LATENCY_BUCKETS,
)
OVERHEAD = Metric(
    "gateway_overhead_seconds",
    "histogram",
    ("stream",),
    "Latency the gateway added to a served completion: total time minus upstream time.",
    OVERHEAD_BUCKETS,
)
TOKENS = Metric(
    "gateway_tokens_total",
    "counter",
    ("model", "deployment", "provider", "kind"),
    "Tokens by kind: prompt, completion, cached (prompt tokens read from a cache), cache_creation.",
)
COST = Metric(
    "gateway_cost_usd_total",
    "counter",
    ("model", "deployment", "provider"),
    "Cost in USD of served completions (summed exactly per process, exported as a float).",
)
UNPRICED = Metric(
    "gateway_unpriced_requests_total",
    "counter",
    ("deployment",),
    "Completions whose cost is unknown: no price in effect for the deployment.",
)
HTTP_REQUESTS = Metric(
    "gateway_http_requests_total",
    "counter",
    ("route", "method", "status"),
    "Every HTTP request, by URL pattern (not path), method and status.",
)
HTTP_DURATION = Metric(
    "gateway_http_request_duration_seconds",
    "histogram",
    ("route",),
    "Time to the response headers (streams: to the first byte), by URL pattern.",
    LATENCY_BUCKETS,
)
REFUSALS = Metric(
    "gateway_refusals_total",
    "counter",
    ("reason",),
    "Requests refused with 429 before any upstream call: reason budget or rate_limit.",
)

# --- computed when scraped ---
COOLDOWN = Metric(
    "gateway_deployment_cooldown",
    "gauge",
    ("deployment",),
    "1 while at least one gateway process keeps the deployment in cooldown, else 0.",
)
BUDGET_UTILIZATION = Metric(
    "gateway_budget_utilization_ratio",
    "gauge",
    ("scope", "id", "name", "period"),
    "Spend of the current budget period over the budget, per key or team that has one (id: the key's or team's id).",
)
STREAM_LENGTH = Metric("gateway_usage_stream_length", "gauge", (), "Usage events in the Redis stream.")
STREAM_PENDING = Metric(
    "gateway_usage_stream_pending", "gauge", (), "Usage events delivered to a consumer and not yet acknowledged."
)
CONSUMER_LAG = Metric(
    "gateway_usage_consumer_lag_seconds",
    "gauge",
    (),
    "Age of the oldest usage event not yet in Postgres (0 when the stream is empty).",
)
CONSUMER_LAG_ENTRIES = Metric(
    "gateway_usage_consumer_lag_entries",
    "gauge",
    (),
    "Usage events never delivered to the ingesting consumer group.",
)
DEAD_LETTERS = Metric(
    "gateway_usage_dead_letters", "gauge", (), "Usage events set aside as undeliverable (dead letters)."
)
CONFIG_VERSION = Metric("gateway_config_version", "gauge", (), "The configuration version this process routes with.")
PROCESSES = Metric(
    "gateway_metrics_processes", "gauge", (), "Gateway processes whose counters were reported in the last seconds."
)

RECORDED = (
    REQUESTS,
    ATTEMPTS,
    FALLBACKS,
    UPSTREAM_LATENCY,
    TTFT,
    OVERHEAD,
    TOKENS,
    COST,
    UNPRICED,
    HTTP_REQUESTS,
    HTTP_DURATION,
    REFUSALS,
)
SCRAPED = (
    COOLDOWN,
    BUDGET_UTILIZATION,
    STREAM_LENGTH,
    STREAM_PENDING,
    CONSUMER_LAG,
    CONSUMER_LAG_ENTRIES,
    DEAD_LETTERS,
    CONFIG_VERSION,
    PROCESSES,
)
ALL = RECORDED + SCRAPED
