"""The usage event: what the request path hands to the recorder, one per request.

It carries the future ``UsageRecord`` row and one latency sample per upstream attempt.
Plain JSON (Decimal as string) so it can sit in a Redis stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class CounterIncrement:
    """Add ``amount`` to Redis counter ``key`` in the same round trip as the event."""

    key: str
    amount: int
    ttl_seconds: int | None = None


@dataclass(slots=True)
class PendingEvent:
    record: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    counters: list[CounterIncrement] = field(default_factory=list)

    def payload(self) -> bytes:
        return orjson.dumps({"record": self.record, "samples": self.samples}, default=str)


def decode_payload(raw: bytes) -> dict[str, Any]:
    return orjson.loads(raw)
