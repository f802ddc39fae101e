"""Consumer ingestion rate, grouped-report time and row-export rate at scale (docs/scaling.md).

    DATABASE_URL=postgres://.../scratch REDIS_URL=redis://.../N \\
        .venv/bin/python bench/ingest_rate.py --events 50000 --consumers 1 --consumers 2 \\
        --rollup-hours 720 --rollup-cells 2000 --export-records 1000000

Use a scratch database and Redis DB: it truncates the usage tables and deletes the stream.

1. Ingestion: puts ``--events`` synthetic usage events (each with one latency sample,
   50 keys in 8 teams, 12 models over 2 deployments each, 1% unpriced, spread over the
   last ``--spread-seconds``) into the Redis stream the gateway writes, then starts
   ``--consumers`` consumer processes (each a separate process with its own database
   connection, as Celery's worker processes are) that run ``usage.consumer.drain`` (the
   consumer's own loop, batches of ``--batch``) until the stream is empty, and checks
   every event became exactly one record and one sample and the rollups add up. Besides
   the wall-clock rate it prints the CPU the consumers and their Postgres backends
   spent per event (steadier than wall time on a shared machine).
   ``--live-rate R --live-seconds S``: instead of filling the stream first, produces R
   events a second for S seconds, stamped when produced, while the consumers drain as
   the periodic task does (a drain a second); prints how long after the last event the
   stream was empty and the largest backlog.
2. Reports: generates ``--rollup-hours`` x ``--rollup-cells`` hourly rollup rows
   server-side (``generate_series``), standing for ``--records-per-cell`` records each,
   then times the finance report grouped by key, by model and by team and model over
   the whole range (five runs each; the median is printed).
3. Row export: generates ``--export-records`` usage records server-side over a month,
   then, in a fresh process, streams the row-level export ``GET /v1/reports/costs``
   serves (``detail_csv`` and ``detail_json`` over ``records_between``) to the end,
   printing rows per second and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402

from gatewaysite.clock import now  # noqa: E402
from gatewaysite.redis_client import get_redis  # noqa: E402

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


def _backend_cpu() -> float:
    """CPU seconds the Postgres backend serving this process's connection has used (same machine)."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LIVE_DONE = "gw:bench:producer-done"


def _consume(batch: int, live: bool) -> None:
    """A consumer process: wait for the start signal on stdin, drain until the stream is empty, report.

    ``live``: drain as the periodic task does (a drain a second, the next at once when one
    took longer) until the producer is done and the stream is empty.
    """
    from usage.consumer import drain

    backend_before = _backend_cpu()
    client = get_redis()
    assert client is not None
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    cpu_before = time.process_time()
    began = time.time()
    ingested = 0
    if live:
        while True:
            turn = time.monotonic()
            got = drain(batch_size=batch, claim_idle_ms=60_000)
            ingested += got
            if not got and client.exists(LIVE_DONE):
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - turn)))
    else:
        while got := drain(batch_size=batch, max_batches=20, claim_idle_ms=60_000):
            ingested += got
    report = {
        "began": began,
        "ended": time.time(),
        "events": ingested,
        "cpu": time.process_time() - cpu_before,
        "backend_cpu": _backend_cpu() - backend_before,
    }
    print(json.dumps(report), flush=True)


def _start_consumers(batch: int, consumers: int, live: bool) -> list[subprocess.Popen[str]]:
    command = [sys.executable, __file__, "--consume", "--batch", str(batch), *(["--live"] if live else [])]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(consumers)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return children


def _results(children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    results = []
    for child in children:
        out, _ = child.communicate()
        assert child.returncode == 0, child.returncode
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def live(rate: int, seconds: float, batch: int, consumers: int) -> None:
    """Events produced at ``rate`` a second, stamped now, while consumers drain as in production."""
    from usage.models import LatencyRollup, LatencySample, UsageRecord

    client = get_redis()
    assert client is not None, "REDIS_URL must name a Redis"
    stream = settings.GATEWAY["USAGE_STREAM"]
    client.delete(stream, LIVE_DONE)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord, routing_latencysample, usage_usagerollup, routing_latencyrollup")
    children = _start_consumers(batch, consumers, live=True)
    began = time.monotonic()
    sent = backlog = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int(rate * (time.monotonic() - began)))
        if due > sent:
            stamp = now().isoformat()
            pipe = client.pipeline(transaction=False)
            for n in range(sent, due):
                pipe.xadd(stream, {"e": _event(n, stamp)})
            pipe.xlen(stream)
            backlog = max(backlog, pipe.execute()[-1])
            sent = due
        time.sleep(0.02)
    produced = time.monotonic() - began
    while client.xlen(stream):
        time.sleep(0.05)
    lag = time.monotonic() - began - produced
    client.set(LIVE_DONE, 1)
    results = _results(children)
    assert UsageRecord.objects.count() == LatencySample.objects.count() == total
    assert sum(LatencyRollup.objects.values_list("count", flat=True)) == total
    print(
        f"live: {rate:,} events/s for {seconds:.0f} s ({total:,} events, stamped when produced), {consumers}"
        f" consumer(s) draining every second: produced in {produced:.1f} s, stream empty {lag:.2f} s after the"
        f" last event, largest backlog {backlog:,} entries; {_cpu_per_thousand(results, total)}"
        f" (load average {os.getloadavg()[0]:.2f})"
    )


def _cpu_per_thousand(results: list[dict[str, Any]], events: int) -> str:
    """The consumers' and their Postgres backends' CPU per 1,000 events, as the report lines say it."""
    cpu = sum(r["cpu"] for r in results)
    backend = sum(r["backend_cpu"] for r in results)
    return (
        f"per 1,000 events: consumer CPU {1000 * cpu / events * 1000:.0f} ms,"
        f" Postgres backend CPU {1000 * backend / events * 1000:.0f} ms"
    )


def ingest(events: int, batch: int, consumers: int, spread: float) -> float:
    from usage.models import LatencySample, UsageRecord, UsageRollup
    from usage.rollups import rollup_differences

    client = get_redis()
    assert client is not None, "REDIS_URL must name a Redis"
    stream = settings.GATEWAY["USAGE_STREAM"]
    client.delete(stream)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord, routing_latencysample, usage_usagerollup, routing_latencyrollup")
    start = now() - timedelta(seconds=spread)
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        pipe.xadd(stream, {"e": _event(n, (start + timedelta(seconds=spread * n / events)).isoformat())})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    results = _results(_start_consumers(batch, consumers, live=False))
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    records = UsageRecord.objects.count()
    samples = LatencySample.objects.count()
    assert records == events and samples == events, (records, samples, [r["events"] for r in results])
    rolled = UsageRollup.objects.aggregate(n=Sum("requests"))["n"]
    assert rolled == events, rolled
    assert not rollup_differences(start - timedelta(hours=1), now() + timedelta(hours=1))
    rate = events / elapsed
    print(
        f"ingestion: {events} events (1 sample each, over {spread:.0f} s), {consumers} consumer(s), batch {batch}:"
        f" {elapsed:.2f} s = {rate:,.0f} events/s; {_cpu_per_thousand(results, events)}"
        f" (split {', '.join(str(r['events']) for r in results)}; load average {os.getloadavg()[0]:.2f})"
    )
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


def _peak_rss_kb() -> int:
    """The process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _export(fmt: str) -> None:
    """An export process: stream the row-level export to the end, report rows/s and peak RSS."""
    from usage.reports import ReportParams, detail_csv, detail_json, range_total, records_between

    end = now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    params = ReportParams(start=end - timedelta(days=31), end=end, group_by=(), format=fmt, detail=True)
    connection.ensure_connection()
    baseline = _peak_rss_kb()
    began, cpu = time.perf_counter(), time.process_time()
    records = records_between(params.start, params.end)
    total = range_total(params.start, params.end)
    chunks = detail_csv(records, total) if fmt == "csv" else detail_json(records, total, params)
    size = lines = 0
    for chunk in chunks:
        size += len(chunk)
        lines += chunk.count(b"\n") if fmt == "csv" else 0
    report = {
        "seconds": time.perf_counter() - began,
        "cpu": time.process_time() - cpu,
        "bytes": size,
        "rows": lines - 2 if fmt == "csv" else total["requests"],  # CSV: less the header and TOTAL lines
        "requests": total["requests"],
        "baseline_kb": baseline,
        "peak_kb": _peak_rss_kb(),
    }
    print(json.dumps(report), flush=True)


def export(records: int, generate: bool) -> None:
    """Generate ``records`` usage records over the last month, then time the row-level export of them."""
    if generate:
        _generate_records(records)
    for fmt in ("csv", "json"):
        out = subprocess.run(
            [sys.executable, __file__, "--export-child", fmt], check=True, capture_output=True, text=True
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        assert r["rows"] == r["requests"] == records, r
        print(
            f"export {fmt}: {r['rows']:,} rows, {r['bytes'] / 1e6:,.0f} MB in {r['seconds']:.1f} s ="
            f" {r['rows'] / r['seconds']:,.0f} rows/s (process CPU {r['cpu']:.1f} s); peak RSS"
            f" {r['peak_kb'] / 1024:.0f} MB (before the export {r['baseline_kb'] / 1024:.0f} MB)"
        )


def _generate_records(records: int) -> None:
    end = now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    begin = end - timedelta(days=30)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord, usage_usagerollup")
        cursor.execute(
            """
            INSERT INTO usage_usagerecord (request_id, created_at, client_key_id, key_name, key_prefix, team,
                provider, deployment, model, provider_model, strategy, route_reason, status, http_status,
                error_code, stream, endpoint, attempts, prompt_tokens, completion_tokens, cached_tokens,
                cache_creation_tokens, cache_creation_1h_tokens, usage_estimated, usage_anomaly, cost_usd,
                pricing_row_id, hedged, hedge_cost_usd, latency_ms, upstream_ms, ttft_ms)
            SELECT 'req_export_' || n, %s::timestamptz + (n::bigint * %s) * interval '1 microsecond', n %% 50 + 1,
                'key-' || (n %% 50 + 1), 'gw_' || (n %% 50 + 1), 'team-' || (n %% 8), 'prov-' || (n %% 2),
                'model-' || (n %% 12) || '-d' || (n %% 2), 'model-' || (n %% 12), 'upstream-' || (n %% 12),
                'balanced', '', 'ok', 200, '', n %% 3 = 0, 'chat', 1, 900 + n %% 97, 40 + n %% 29, 0, 0, 0,
                false, '', CASE WHEN n %% 100 = 0 THEN NULL ELSE (n %% 9973) / 1000000.0 END, 7, false, NULL,
                100 + n %% 300, 95 + n %% 300, NULL
            FROM generate_series(0, %s - 1) AS n
            """,
            [begin, int(30 * 86400 * 1e6 / records), records],
        )
        cursor.execute("ANALYZE usage_usagerecord")
    from usage.rollups import rollup_rebuild

    rollup_rebuild(begin, end)
    print(f"export: {records:,} records over 30 days generated in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--consumers", type=int, action="append", help="consumer processes; repeat to measure several counts"
    )
    parser.add_argument("--spread-seconds", type=float, default=3600, help="the events' created_at span, up to now")
    parser.add_argument("--rollup-hours", type=int, default=720)
    parser.add_argument("--rollup-cells", type=int, default=2000)
    parser.add_argument("--records-per-cell", type=int, default=70)
    parser.add_argument("--export-records", type=int, default=0, help="time the row export over this many records")
    parser.add_argument(
        "--export-reuse", action="store_true", help="export the records a previous run generated (same count)"
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument("--live-rate", type=int, default=0, help="also produce this many events a second, live")
    parser.add_argument("--live-seconds", type=float, default=60)
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)  # a consumer process
    parser.add_argument("--live", action="store_true", help=argparse.SUPPRESS)  # ... draining as in production
    parser.add_argument("--export-child", choices=("csv", "json"), help=argparse.SUPPRESS)  # an export process
    args = parser.parse_args()
    if args.consume:
        _consume(args.batch, args.live)
        return
    if args.export_child:
        _export(args.export_child)
        return
    call_command("migrate", verbosity=0)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if not args.skip_ingest:
        for consumers in args.consumers or [1]:
            ingest(args.events, args.batch, consumers, args.spread_seconds)
    if args.live_rate:
        for consumers in args.consumers or [1]:
            live(args.live_rate, args.live_seconds, args.batch, consumers)
    if not args.skip_reports:
        reports(args.rollup_hours, args.rollup_cells, args.records_per_cell)
    if args.export_records:
        export(args.export_records, generate=not args.export_reuse)


if __name__ == "__main__":
    main()
