"""Latency rollups: arithmetic, idempotence, late samples, pruning, tasks, and no loss on a worker crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from gatewaysite.clock import now
from usage.ingest import ingest_events
from usage.latency.histogram import RELATIVE_ERROR, histogram_from
from usage.latency.rollup import refresh_buckets, rollup_recent
from usage.latency.services import latency_samples_prune
from usage.models import LatencyRollup, LatencySample

MINUTE = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def sample(
    request_id: str,
    *,
    at: datetime,
    upstream_ms: float,
    deployment: str = "d1",
    ok: bool = True,
    attempt: int = 1,
    http_status: int = 200,
    ttft_ms: float | None = None,
) -> dict:
    """One latency sample as the request path puts it in a usage event."""
    return {
        "request_id": request_id,
        "attempt": attempt,
        "created_at": at.isoformat(),
        "provider": "p1",
        "deployment": deployment,
        "model": "gpt-4o-mini",
        "ok": ok,
        "http_status": http_status,
        "stream": ttft_ms is not None,
        "total_ms": upstream_ms + 2,
        "upstream_ms": upstream_ms,
        "ttft_ms": ttft_ms,
        "overhead_ms": 2.0,
    }


def event(request_id: str, samples: list[dict]) -> dict:
    record = {
        "request_id": request_id,
        "created_at": samples[0]["created_at"],
        "status": "ok",
        "http_status": 200,
        "model": "gpt-4o-mini",
    }
    return {"record": record, "samples": samples}


def known_events() -> list[dict]:
    """100 successes of 1..100 ms (the even ones streamed, ttft = ms / 2) and 3 failures."""
    events = []
    for value in range(1, 101):
        at = MINUTE + timedelta(seconds=value % 60, microseconds=value)
        ttft = value / 2 if value % 2 == 0 else None
        events.append(event(f"req_{value}", [sample(f"req_{value}", at=at, upstream_ms=float(value), ttft_ms=ttft)]))
    for index in range(3):
        rid = f"req_err{index}"
        failed = sample(rid, at=MINUTE + timedelta(seconds=5), upstream_ms=5000.0, ok=False, http_status=503)
        retried = sample(rid, at=MINUTE + timedelta(seconds=6), upstream_ms=10.0, attempt=2, deployment="d2")
        events.append(event(rid, [failed, retried]))
    return events


def rollup_rows() -> list[tuple]:
    return list(LatencyRollup.objects.order_by("deployment", "minute").values_list())


@pytest.mark.django_db
def test_rollup_arithmetic_and_percentiles() -> None:
    touched = ingest_events(known_events())
    assert (("d1", MINUTE)) in touched
    assert refresh_buckets(touched) == 2
    row = LatencyRollup.objects.get(deployment="d1", minute=MINUTE)
    assert row.provider == "p1"
    assert row.count == 103
    assert row.error_count == 3
    assert row.sum_ms == pytest.approx(5050.0)
    assert (row.min_ms, row.max_ms) == (1.0, 100.0)
    assert row.overhead_sum_ms == pytest.approx(200.0)
    histogram = histogram_from([row.histogram])
    assert histogram.total == 100
    for q, exact in ((0.5, 50), (0.95, 95), (0.99, 99)):
        assert histogram.percentile(q, low=row.min_ms, high=row.max_ms) == pytest.approx(exact, rel=RELATIVE_ERROR)
    assert row.ttft_count == 50
    assert row.ttft_sum_ms == pytest.approx(sum(v / 2 for v in range(2, 101, 2)))
    assert (row.ttft_min_ms, row.ttft_max_ms) == (1.0, 50.0)
    ttft = histogram_from([row.ttft_histogram])
    assert ttft.percentile(0.5, low=1, high=50) == pytest.approx(25, rel=RELATIVE_ERROR)
    other = LatencyRollup.objects.get(deployment="d2", minute=MINUTE)
    assert (other.count, other.error_count, other.sum_ms, other.ttft_count) == (3, 0, 30.0, 0)


@pytest.mark.django_db
def test_refresh_is_idempotent_and_redelivery_changes_nothing() -> None:
    events = known_events()
    refresh_buckets(ingest_events(events))
    first = rollup_rows()
    refresh_buckets(ingest_events(events))  # the whole batch delivered again
    refresh_buckets({("d1", MINUTE), ("d2", MINUTE)})
    assert rollup_rows() == first  # same ids, same figures
    assert LatencySample.objects.count() == 106


@pytest.mark.django_db
def test_refresh_recomputes_when_samples_arrive_later() -> None:
    refresh_buckets(ingest_events(known_events()[:10]))
    assert LatencyRollup.objects.get(deployment="d1").count == 10
    refresh_buckets(ingest_events(known_events()))
    assert LatencyRollup.objects.get(deployment="d1").count == 103


@pytest.mark.django_db
def test_rollup_recent_catches_late_samples() -> None:
    moment = now()
    recent = moment - timedelta(minutes=2)
    old = moment - timedelta(minutes=30)
    ingest_events(
        [
            event("r1", [sample("r1", at=recent, upstream_ms=10)]),
            event("r2", [sample("r2", at=recent, upstream_ms=30)]),
            event("r3", [sample("r3", at=old, upstream_ms=10)]),
        ]
    )  # inserted, never rolled up (a refresh that did not happen)
    assert rollup_recent(minutes=5) == 1
    row = LatencyRollup.objects.get()
    assert (row.count, row.sum_ms) == (2, 40.0)
    assert row.minute == recent.replace(second=0, microsecond=0)


@pytest.mark.django_db
def test_prune_deletes_old_samples_in_batches_and_keeps_rollups() -> None:
    moment = now()
    old = [event(f"o{i}", [sample(f"o{i}", at=moment - timedelta(days=8, minutes=i), upstream_ms=5)]) for i in range(5)]
    new = [event(f"n{i}", [sample(f"n{i}", at=moment - timedelta(days=1), upstream_ms=5)]) for i in range(2)]
    refresh_buckets(ingest_events(old + new))
    rollups = LatencyRollup.objects.count()
    assert latency_samples_prune(batch_size=2) == 5
    assert LatencySample.objects.count() == 2
    assert LatencyRollup.objects.count() == rollups
    # a refresh of a pruned bucket keeps its rollup as it was
    minute = (moment - timedelta(days=8)).replace(second=0, microsecond=0)
    before = LatencyRollup.objects.get(minute=minute).count
    refresh_buckets({("d1", minute)})
    assert LatencyRollup.objects.get(minute=minute).count == before == 1


@pytest.mark.django_db
def test_tasks_run_and_state_their_policy() -> None:
    from django.db import OperationalError

    from gatewaysite.celery import app
    from usage.latency.tasks import prune_samples
    from usage.latency.tasks import rollup_recent as rollup_task
    from usage.tasks import drain_stream

    ingest_events([event("t1", [sample("t1", at=now() - timedelta(minutes=1), upstream_ms=7)])])
    assert rollup_task.apply().get() == 1
    assert prune_samples.apply().get() == 0
    for task in (rollup_task, prune_samples):
        assert task.queue == "latency"
        assert task.acks_late is True
        assert task.expires
        assert task.autoretry_for == (OperationalError,)
    schedule = app.conf.beat_schedule
    by_task = {entry["task"]: entry for entry in schedule.values()}
    assert by_task["usage.drain_stream"]["schedule"] == 1.0
    assert by_task["routing.rollup_recent"]["schedule"] == 30.0
    assert by_task["routing.prune_samples"]["schedule"] == 3600.0
    assert by_task["routing.rollup_recent"]["options"]["queue"] == "latency"
    assert by_task["usage.drain_stream"]["options"]["queue"] == drain_stream.queue == "usage"
    for name in by_task:
        assert name in app.tasks


class Crash(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_no_sample_lost_when_the_worker_dies_between_commit_and_ack(redis_client: Any) -> None:
    from django.conf import settings

    from usage.consumer import GROUP, drain
    from usage.events import PendingEvent
    from usage.recorder import RedisStreamRecorder

    recorder = RedisStreamRecorder()
    moment = now() - timedelta(minutes=1)
    for index in range(40):
        rid = f"req_k{index}"
        samples = [sample(rid, at=moment, upstream_ms=float(index + 1), deployment=f"dep{index % 2}")]
        if index % 4 == 0:  # a failed first attempt on another deployment
            samples = [
                sample(rid, at=moment, upstream_ms=900.0, ok=False, deployment="dep-x", http_status=502),
                {**samples[0], "attempt": 2},
            ]
        recorder.record(PendingEvent(record=event(rid, samples)["record"], samples=samples))

    def die() -> None:
        raise Crash("worker killed after commit, before ack")

    with pytest.raises(Crash):
        drain(batch_size=15, after_insert=die)
    stream = settings.GATEWAY["USAGE_STREAM"]
    assert redis_client.xpending(stream, GROUP)["pending"] == 15  # read, committed, never acknowledged
    assert LatencySample.objects.count() > 0

    assert drain(batch_size=15, claim_idle_ms=0) == 40
    assert redis_client.xlen(stream) == 0
    assert redis_client.xpending(stream, GROUP)["pending"] == 0
    assert LatencySample.objects.count() == 50  # 40 requests, 10 of them with two attempts
    assert LatencySample.objects.values("request_id", "attempt").distinct().count() == LatencySample.objects.count()
    rows = {r.deployment: r for r in LatencyRollup.objects.all()}
    assert rows["dep0"].count == 20 and rows["dep1"].count == 20
    assert rows["dep0"].sum_ms == pytest.approx(sum(float(i + 1) for i in range(0, 40, 2)))
    assert (rows["dep-x"].count, rows["dep-x"].error_count) == (10, 10)
    before = rollup_rows()
    assert drain(claim_idle_ms=0) == 0
    refresh_buckets({(d, moment.replace(second=0, microsecond=0)) for d in rows})
    assert rollup_rows() == before


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the database sums on Postgres only")
def test_the_database_sums_the_rollups_python_would() -> None:
    """Edges exactly, below 1 ms, past the last edge, failures, streams: the same rows either way."""
    from usage.latency.histogram import EDGES
    from usage.latency.rollup import _SAMPLE_COLUMNS, _aggregate_in_database, aggregate

    values = [0.0, 0.25, 1.0, *EDGES[1:6], EDGES[40], EDGES[-1], EDGES[-1] * 3, 17.3, 250.125, 999.999]
    events = []
    for n, value in enumerate(values):
        at = MINUTE + timedelta(seconds=n, minutes=n % 2)
        events.append(
            event(
                f"req_e{n}",
                [
                    sample(f"req_e{n}", at=at, upstream_ms=value, ttft_ms=value / 3 if n % 3 else None),
                    sample(f"req_e{n}", at=at, upstream_ms=value + 9, attempt=2, ok=n % 4 != 0, deployment="d2"),
                ],
            )
        )
    ingest_events(events)
    samples = LatencySample.objects.all()
    in_python = {(r.deployment, r.minute): r for r in aggregate(samples.values_list(*_SAMPLE_COLUMNS))}
    in_database = {(r.deployment, r.minute): r for r in _aggregate_in_database(samples)}
    assert in_python.keys() == in_database.keys() and len(in_python) == 4
    fields = ["provider", "count", "error_count", "min_ms", "max_ms", "histogram", "ttft_count", "ttft_min_ms"]
    fields += ["ttft_max_ms", "ttft_histogram"]
    for key, expected in in_python.items():
        got = in_database[key]
        for name in fields:
            assert getattr(got, name) == getattr(expected, name), (key, name)
        for name in ("sum_ms", "ttft_sum_ms", "overhead_sum_ms"):
            assert getattr(got, name) == pytest.approx(getattr(expected, name), abs=0.001), (key, name)
