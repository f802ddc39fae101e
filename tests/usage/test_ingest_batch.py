"""The batch statement (Postgres): records, rollup cells and samples of a batch in one statement.

Postgres reads the batch's JSON itself, so what the Python path did per value (defaults,
conversions) happens in SQL: a missing field takes the model's default, a duplicate in
the batch or a replay inserts nothing and adds nothing to the rollups, a late record adds
itself to its old hour, and a value only Postgres refuses (a malformed timestamp) fails the
batch, which the consumer then isolates entry by entry, so the others go in exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import connection

from gatewaysite.clock import now
from usage.consumer import FAILURES, GROUP, drain
from usage.ingest import ingest_events
from usage.latency.rollup import aggregate, minute_of
from usage.models import LatencyRollup, LatencySample, UsageDeadLetter, UsageRecord, UsageRollup
from usage.rollups import rollup_differences

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the batch statement is Postgres's"),
]

STREAM = "{gw}:usage"


def _event(n: int, at: datetime, **record: Any) -> dict[str, Any]:
    base = {
        "request_id": f"req_batch_{n}",
        "created_at": at.isoformat(),
        "client_key_id": n % 3 or None,
        "key_name": f"k{n % 3}",
        "team": "é-team" if n % 2 else "Z-team",  # sorts apart by code point and by most collations
        "provider": "up",
        "deployment": "d1",
        "model": "gpt-4o",
        "status": "ok",
        "prompt_tokens": 10 + n,
        "completion_tokens": n,
        "cost_usd": None if n % 5 == 0 else f"0.{n:012d}",
    }
    sample = {
        "request_id": base["request_id"],
        "attempt": 1,
        "created_at": at.isoformat(),
        "provider": "up",
        "deployment": "d1",
        "model": "gpt-4o",
        "total_ms": 10.0 + n,
        "upstream_ms": 9.0 + n,
        "overhead_ms": 1.0,
    }
    return {"record": {**base, **record}, "samples": [sample]}


def test_a_batch_is_exactly_once_with_exact_rollups_and_model_defaults() -> None:
    at = now().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    events = [_event(n, at + timedelta(seconds=n)) for n in range(1, 41)]
    touched = ingest_events([*events, events[3]])  # the same event twice in one batch
    assert UsageRecord.objects.count() == LatencySample.objects.count() == 40
    assert touched == {("d1", minute_of(at))}

    record = UsageRecord.objects.get(request_id="req_batch_7")
    assert (record.http_status, record.endpoint, record.attempts, record.stream) == (200, "chat", 1, False)
    assert (record.provider_model, record.cache_creation_1h_tokens, record.hedged) == ("", 0, False)
    assert record.cost_usd == Decimal("0.000000000007") and record.client_key_id == 1
    assert UsageRecord.objects.get(request_id="req_batch_5").cost_usd is None
    sample = LatencySample.objects.get(request_id="req_batch_7")
    assert (sample.ok, sample.http_status, sample.stream, sample.ttft_ms) == (True, 200, False, None)

    start, end = at - timedelta(hours=2), at + timedelta(hours=2)
    assert rollup_differences(start, end) == []
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 40
    assert UsageRollup.objects.filter(client_key_id=0).exists()  # no key: cell 0, as rollup_add does

    ingest_events(events)  # a replay of the whole batch: nothing inserted, nothing added
    late = _event(99, at - timedelta(days=40))  # a late record lands in its own, old hour
    ingest_events([late, events[0]])
    assert UsageRecord.objects.count() == 41
    assert rollup_differences(start - timedelta(days=41), end) == []
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 41
    old = UsageRollup.objects.get(hour=(at - timedelta(days=40)).replace(minute=0))
    assert (old.requests, old.cost_usd) == (1, Decimal("0.000000000099"))


def test_the_rows_are_those_of_the_python_path() -> None:
    """What the batch statement stores equals what a rollup recomputed from the rows says."""
    at = datetime(2026, 11, 3, 10, 0, 7, 250_000, tzinfo=UTC)
    ingest_events([_event(1, at, ttft_ms=12.5, stream=True, usage_anomaly="odd", hedge_cost_usd="0.5")])
    row = UsageRecord.objects.get(request_id="req_batch_1")
    assert (row.created_at, row.ttft_ms, row.stream, row.usage_anomaly) == (at, 12.5, True, "odd")
    assert row.hedge_cost_usd == Decimal("0.5")
    samples = LatencySample.objects.values_list(
        "deployment", "provider", "created_at", "ok", "upstream_ms", "ttft_ms", "overhead_ms"
    )
    [expected] = aggregate(samples)
    assert expected.count == 1 and expected.sum_ms == 10.0


def test_a_value_only_postgres_refuses_is_isolated_and_the_rest_goes_in_once(redis_client: Any, settings: Any) -> None:
    settings.GATEWAY = {**settings.GATEWAY, "USAGE_MAX_ATTEMPTS": 2}
    at = now() - timedelta(minutes=2)
    for n in range(1, 21):
        event = _event(n, at)
        if n == 10:
            event["record"]["created_at"] = "the tenth of never"  # Postgres's timestamp input refuses it
        redis_client.xadd(STREAM, {"e": orjson.dumps(event)})
    assert drain() == 19
    assert UsageRecord.objects.count() == LatencySample.objects.count() == 19
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 1
    assert drain(claim_idle_ms=0) == 0  # try 2: given up
    letter = UsageDeadLetter.objects.get()
    assert letter.request_id == "req_batch_10" and "never" in letter.error
    assert redis_client.xlen(STREAM) == 0 and not redis_client.exists(FAILURES)
    assert UsageRecord.objects.count() == 19
    assert rollup_differences(at - timedelta(hours=1), at + timedelta(hours=1)) == []
    assert LatencyRollup.objects.get().count == 19  # the consumer refreshed the latency bucket


def test_what_python_refuses_never_reaches_the_database() -> None:
    at = now()
    for bad, message in (
        ({"prompt_tokens": -1}, "not a token count"),
        ({"completion_tokens": True}, "not a token count"),
        ({"cost_usd": "NaN"}, "never negative"),
        ({"hedge_cost_usd": "-0.1"}, "never negative"),
        ({"costs": "1"}, "costs"),
    ):
        with pytest.raises(ValueError, match=message):
            ingest_events([_event(1, at), _event(2, at, **bad)])
    with pytest.raises(KeyError):
        ingest_events([{"record": {"request_id": "req_no_time"}}])
    assert not UsageRecord.objects.exists() and not LatencySample.objects.exists()
