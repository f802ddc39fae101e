"""Partitioned usage records and samples (Postgres), and hourly rollups kept exact through replays.

Every path that can deliver an event twice is taken for real: a consumer that dies between
commit and acknowledgement (the entry is claimed again), the same event added to the
stream twice, a dead letter replayed after it went in, and a record that arrives hours
late. After each, the rollups equal the sums of the raw records to the last decimal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Sum

from gatewaysite.clock import now
from routing.models import LatencySample
from usage.consumer import drain
from usage.models import UsageDeadLetter, UsageRecord, UsageRollup
from usage.partitions import SAMPLES, USAGE, existing_partitions, partitions_ensure, partitions_retire
from usage.reports import ReportParams, cost_report
from usage.rollups import rollup_differences

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "{gw}:usage"


class Killed(Exception):
    pass


def _event(n: int, at: datetime, cost: str | None, *, key: int | None = 1, model: str = "gpt-4o") -> bytes:
    record = {
        "request_id": f"req_part_{n}",
        "created_at": at.isoformat(),
        "client_key_id": key,
        "key_name": f"k{key}",
        "team": "red" if (key or 0) % 2 else "blue",
        "provider": "up",
        "deployment": f"d-{model}",
        "model": model,
        "status": "ok",
        "prompt_tokens": 10 + n,
        "completion_tokens": n,
        "cost_usd": cost,
    }
    sample = {
        "request_id": record["request_id"],
        "attempt": 1,
        "created_at": at.isoformat(),
        "provider": "up",
        "deployment": f"d-{model}",
        "model": model,
        "total_ms": 10.0 + n,
        "upstream_ms": 9.0,
        "overhead_ms": 1.0 + n,
    }
    return orjson.dumps({"record": record, "samples": [sample]})


def _assert_exact(start: datetime, end: datetime) -> None:
    raw = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).aggregate(
        n=Count("id"), cost=Sum("cost_usd"), prompt=Sum("prompt_tokens")
    )
    rolled = UsageRollup.objects.filter(hour__gte=start, hour__lt=end).aggregate(
        n=Sum("requests"), cost=Sum("cost_usd"), prompt=Sum("prompt_tokens")
    )
    assert rolled["n"] == raw["n"] and rolled["prompt"] == raw["prompt"]
    assert rolled["cost"] == (raw["cost"] or Decimal(0))  # Decimal equality: to the last digit
    assert rollup_differences(start, end) == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are a Postgres feature")
def test_tables_are_partitioned_and_partitions_are_made_ahead_and_retired() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, p.partstrat FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
        )
        assert {USAGE.table: "r", SAMPLES.table: "r"}.items() <= dict(cursor.fetchall()).items()
    at = datetime(2031, 5, 30, 12, tzinfo=UTC)  # far from the migration's own partitions
    # a record for a month that has no partition yet lands in the default partition ...
    LatencySample.objects.create(
        request_id="r0",
        created_at=at,
        provider="p",
        deployment="d",
        model="m",
        total_ms=1,
        upstream_ms=1,
        overhead_ms=0,
    )
    created = partitions_ensure(at=at)
    assert {"usage_usagerecord_203105", "usage_usagerecord_203106", "usage_usagerecord_203107"} <= set(created)
    assert {f"routing_latencysample_203105{d}" for d in range(30, 32)} <= set(created)
    assert "routing_latencysample_20310606" in created  # 7 days ahead by default
    assert partitions_ensure(at=at) == []  # idempotent
    # ... and moves into its partition when that is created
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM routing_latencysample_20310530")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM routing_latencysample_default WHERE request_id = 'r0'")
        assert cursor.fetchone()[0] == 0
    # retention: raw samples go after 7 days (whole partitions dropped); usage stays
    dropped = partitions_retire(at=at + timedelta(days=9))
    assert "routing_latencysample_20310530" in dropped and "routing_latencysample_20310601" not in dropped
    assert not [name for name in dropped if name.startswith(USAGE.table)]
    assert not LatencySample.objects.filter(request_id="r0").exists()
    with connection.cursor() as cursor:
        assert "usage_usagerecord_203105" in existing_partitions(cursor, USAGE.table)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are a Postgres feature")
def test_usage_retention_is_configurable(settings: Any) -> None:
    at = datetime(2032, 1, 15, tzinfo=UTC)
    partitions_ensure(at=at)
    settings.GATEWAY = {**settings.GATEWAY, "USAGE_RETENTION_MONTHS": 1}
    dropped = partitions_retire(at=datetime(2032, 3, 2, tzinfo=UTC))
    assert "usage_usagerecord_203201" in dropped and "usage_usagerecord_203202" not in dropped


def test_every_replay_path_is_exactly_once_and_rollups_stay_exact(redis_client: Any) -> None:
    hour = now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    costs = ["0.000000000001", "0.333333333333", None, "1.000000000007", "0.1"]
    events = [_event(n, hour + timedelta(minutes=7 * n), cost, key=n % 3 or None) for n, cost in enumerate(costs)]
    for payload in events:
        redis_client.xadd(STREAM, {"e": payload})

    def crash() -> None:
        raise Killed

    # 1. a consumer dies between commit and acknowledgement; the next one claims and re-inserts
    with pytest.raises(Killed):
        drain(after_insert=crash)
    assert drain(claim_idle_ms=0) == len(events)
    # 2. the same events delivered again
    for payload in events[:3]:
        redis_client.xadd(STREAM, {"e": payload})
    drain(claim_idle_ms=0)
    # 3. a dead letter of an event that did go in, replayed
    letter = UsageDeadLetter.objects.create(
        stream_id="1-1",
        request_id="req_part_1",
        payload=events[1].decode(),
        error="x",
        first_seen=now(),
        last_seen=now(),
    )
    call_command("usage_deadletters", "replay", str(letter.pk), stdout=StringIO())
    # 4. a late record, hours after its hour was last written
    late = _event(99, hour - timedelta(hours=5), "2.5", key=1)
    redis_client.xadd(STREAM, {"e": late})
    redis_client.xadd(STREAM, {"e": late})
    drain(claim_idle_ms=0)

    assert UsageRecord.objects.count() == len(events) + 1
    assert LatencySample.objects.count() == len(events) + 1
    start, end = hour - timedelta(hours=6), hour + timedelta(hours=2)
    _assert_exact(start, end)
    total = sum((Decimal(c) for c in costs if c), Decimal(0)) + Decimal("2.5")
    assert UsageRollup.objects.aggregate(c=Sum("cost_usd"))["c"] == total
    # the report over rollups (whole hours) and raw edges gives the raw answer
    params = ReportParams(start=start + timedelta(minutes=30), end=end, group_by=("key",), format="json", detail=False)
    report = cost_report(params)
    raw = cost_report(params, records=UsageRecord.objects.filter(created_at__gte=params.start, created_at__lt=end))
    assert report["rows"] == raw["rows"] and report["total"] == raw["total"]
    assert Decimal(report["total"]["cost_usd"]) == total
    # a rebuild from the raw records changes nothing
    before = list(UsageRollup.objects.order_by("hour", "client_key_id").values_list("hour", "requests", "cost_usd"))
    call_command("usage_rollups", "rebuild", "--since", str((start - timedelta(days=1)).date()), stdout=StringIO())
    after = list(UsageRollup.objects.order_by("hour", "client_key_id").values_list("hour", "requests", "cost_usd"))
    assert before == after
    call_command("usage_rollups", "check", "--since", str((start - timedelta(days=1)).date()), stdout=StringIO())


def test_a_group_with_only_unpriced_records_has_an_unknown_cost(redis_client: Any) -> None:
    at = datetime(2026, 10, 3, 10, tzinfo=UTC)
    for n in range(3):
        redis_client.xadd(STREAM, {"e": _event(200 + n, at + timedelta(minutes=n), None, key=5, model="mystery")})
    drain(claim_idle_ms=0)
    day = date(2026, 10, 3)
    params = ReportParams(
        start=datetime.combine(day, datetime.min.time(), tzinfo=UTC),
        end=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(days=1),
        group_by=("model",),
        format="json",
        detail=False,
    )
    [row] = cost_report(params)["rows"]
    assert row["requests"] == 3 and row["unpriced_requests"] == 3 and row["cost_usd"] is None
