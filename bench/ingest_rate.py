"""Consumer ingestion rate and grouped-report time at scale (docs/scaling.md).

    DATABASE_URL=postgres://.../scratch REDIS_URL=redis://.../N \\
        .venv/bin/python bench/ingest_rate.py --events 50000 --rollup-hours 720 --rollup-cells 2000

Use a scratch database and Redis DB: it truncates the usage tables and deletes the stream.

1. Ingestion: puts ``--events`` synthetic usage events (each with one latency sample,
   50 keys in 8 teams, 12 models over 2 deployments each, 1% unpriced, spread over the
   last hour) into the Redis stream the gateway writes, then times
   ``usage.consumer.drain`` (the consumer's own loop, batches of ``--batch``) until the
   stream is empty, and checks every event became exactly one record and one sample.
2. Reports: generates ``--rollup-hours`` x ``--rollup-cells`` hourly rollup rows
   server-side (``generate_series``), standing for ``--records-per-cell`` records each,
   then times the finance report grouped by key, by model and by team and model over
   the whole range (five runs each; the median is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from gatewaysite.clock import now  # noqa: E402
from gatewaysite.redis import get_redis  # noqa: E402

MODELS = [f"model-{n}" for n in range(12)]


def _event(n: int, at_iso: str) -> bytes:
    model = MODELS[n % len(MODELS)]
    deployment = f"{model}-d{n % 2}"
    key = n % 50 + 1
    record = {
        "request_id": f"req_bench_{n}",
        "created_at": at_iso,
        "client_key_id": key,
        "key_name": f"key-{key}",
        "team": f"team-{key % 8}",
        "provider": f"prov-{n % 2}",
        "deployment": deployment,
        "model": model,
        "status": "ok",
        "prompt_tokens": 900 + n % 97,
        "completion_tokens": 40 + n % 29,
        "cost_usd": None if n % 100 == 0 else f"0.{n % 9973:06d}",
    }
    sample = {
        "request_id": record["request_id"],
        "attempt": 1,
        "created_at": at_iso,
        "provider": record["provider"],
        "deployment": deployment,
        "model": model,
        "total_ms": 100.0 + n % 300,
        "upstream_ms": 95.0 + n % 300,
        "overhead_ms": 1.0 + n % 7 / 10,
    }
    return orjson.dumps({"record": record, "samples": [sample]})


def ingest(events: int, batch: int) -> float:
    from routing.models import LatencySample
    from usage.consumer import drain
    from usage.models import UsageRecord

    client = get_redis()
    assert client is not None, "REDIS_URL must name a Redis"
    stream = settings.GATEWAY["USAGE_STREAM"]
    client.delete(stream)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord, routing_latencysample, usage_usagerollup")
    start = now() - timedelta(hours=1)
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        pipe.xadd(stream, {"e": _event(n, (start + timedelta(seconds=3600 * n / events)).isoformat())})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    began = time.perf_counter()
    ingested = 0
    while ingested < events:
        got = drain(batch_size=batch, max_batches=20, claim_idle_ms=60_000)
        if not got:
            break
        ingested += got
    elapsed = time.perf_counter() - began
    records = UsageRecord.objects.count()
    samples = LatencySample.objects.count()
    assert records == events and samples == events, (records, samples, ingested)
    rate = events / elapsed
    print(f"ingestion: {events} events (1 sample each) in {elapsed:.2f} s = {rate:,.0f} events/s (batch {batch})")
    return rate


def reports(hours: int, cells: int, per_cell: int) -> dict[str, float]:
    from usage.reports import ReportParams, cost_report

    end = now().replace(minute=0, second=0, microsecond=0)
    begin = end - timedelta(hours=hours)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerollup")
        cursor.execute(
            """
            INSERT INTO usage_usagerollup (hour, client_key_id, key_name, key_prefix, team, provider, deployment,
                model, endpoint, requests, unpriced_requests, prompt_tokens, completion_tokens, cached_tokens,
                cache_creation_tokens, cache_creation_1h_tokens, cost_usd)
            SELECT %s::timestamptz + h * interval '1 hour', c / 5 + 1, 'key-' || (c / 5 + 1), 'p' || (c / 5 + 1),
                'team-' || (c / 5 %% 40), 'prov-' || (c %% 2), 'model-' || (c %% 5) || '-d' || (c %% 2),
                'model-' || (c %% 5), 'chat', %s, 0, %s * 950, %s * 55, 0, 0, 0,
                (%s * (0.001 + (c %% 97) * 0.000013))::numeric(30, 12)
            FROM generate_series(0, %s - 1) AS h, generate_series(0, %s - 1) AS c
            """,
            [begin, per_cell, per_cell, per_cell, per_cell, hours, cells],
        )
        cursor.execute("ANALYZE usage_usagerollup")
    rows = hours * cells
    print(
        f"rollups: {rows:,} rows ({hours} hours x {cells} cells) standing for {rows * per_cell:,} records,"
        f" generated in {time.perf_counter() - t0:.1f} s"
    )
    timings = {}
    for group in (("key",), ("model",), ("team", "model")):
        params = ReportParams(start=begin, end=end, group_by=group, format="json", detail=False)
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            report = cost_report(params)
            runs.append(time.perf_counter() - t)
        assert report["total"]["requests"] == rows * per_cell, report["total"]
        timings[",".join(group)] = statistics.median(runs)
        print(f"report by {','.join(group)}: {len(report['rows'])} rows, median {statistics.median(runs):.3f} s")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rollup-hours", type=int, default=720)
    parser.add_argument("--rollup-cells", type=int, default=2000)
    parser.add_argument("--records-per-cell", type=int, default=70)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if not args.skip_ingest:
        ingest(args.events, args.batch)
    if not args.skip_reports:
        reports(args.rollup_hours, args.rollup_cells, args.records_per_cell)


if __name__ == "__main__":
    main()
