"""The usage event: what the request path hands to the recorder, one per request.

It carries the future ``UsageRecord`` row and one latency sample per upstream attempt,
each a slotted dataclass whose fields are exactly the row's columns
(tests/usage/test_events.py holds them to the models): a misspelt field is a
``TypeError`` where the event is built, never a value the ingest drops. orjson writes
slotted dataclasses natively, so the hot path pays no conversion; Decimal goes out as
a string (``default=str``) so the event can sit in a Redis stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson


@dataclass(slots=True, kw_only=True)
class UsageRecordData:
    """One ``usage.models.UsageRecord`` row (``client_key`` as its id)."""

    request_id: str
    created_at: datetime
    client_key_id: int | None
    key_name: str
    key_prefix: str
    team: str
    provider: str
    deployment: str
    model: str
    provider_model: str
    strategy: str
    route_reason: str
    status: str
    http_status: int
    error_code: str
    stream: bool
    endpoint: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    cache_creation_1h_tokens: int
    usage_estimated: bool
    usage_anomaly: str
    cost_usd: Decimal | None
    pricing_row_id: int | None
    hedged: bool
    hedge_cost_usd: Decimal | None
    latency_ms: float
    upstream_ms: float
    ttft_ms: float | None


@dataclass(slots=True, kw_only=True)
class LatencySampleData:
    """One ``LatencySample`` row: one upstream attempt of a request."""

    request_id: str
    attempt: int
    created_at: datetime
    provider: str
    deployment: str
    model: str
    ok: bool
    http_status: int
    stream: bool
    total_ms: float
    upstream_ms: float
    ttft_ms: float | None
    overhead_ms: float


@dataclass(slots=True)
class CounterIncrement:
    """Add ``amount`` to Redis counter ``key`` in the same round trip as the event."""

    key: str
    amount: int
    ttl_seconds: int | None = None


@dataclass(slots=True)
class PendingEvent:
    record: UsageRecordData
    samples: list[LatencySampleData] = field(default_factory=list)
    counters: list[CounterIncrement] = field(default_factory=list)

    def payload(self) -> bytes:
        return orjson.dumps({"record": self.record, "samples": self.samples}, default=str)


def decode_payload(raw: bytes) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(raw)
    return result
