"""How long the operator overview takes with many usage records (docs/observability.md).

    DATABASE_URL=postgres://.../scratch .venv/bin/python bench/overview_rows.py 1000000

Use a scratch database: it inserts ROWS usage records spread evenly over the current
month up to now (50 keys in 8 teams, 12 models, 1% unpriced), rolls up the closed days
once (what the minute task keeps up to date), then times the overview five times.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from gatewaysite.clock import now  # noqa: E402


def main(rows: int) -> None:
    call_command("migrate", verbosity=0)
    moment = now()
    month_start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = (moment - month_start).total_seconds()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE usage_usagerecord, usage_usagerollup")
        cursor.execute(
            """
            INSERT INTO usage_usagerecord (request_id, created_at, key_name, key_prefix, team, provider, deployment,
                model, provider_model, strategy, route_reason, status, http_status, error_code, stream, attempts,
                prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, usage_estimated, cost_usd,
                latency_ms, upstream_ms, client_key_id)
            SELECT 'bench_' || g, %s + (g::float8 / %s) * %s * interval '1 second', 'key-' || (g %% 50), 'p' || (g %% 50),
                'team-' || (g %% 8), 'prov', 'dep-' || (g %% 12), 'model-' || (g %% 12), 'm', 'cost', '', 'ok', 200, '',
                false, 1, 500, 200, 0, 0, false,
                CASE WHEN g %% 100 = 0 THEN NULL ELSE (g %% 1000) * 0.000001234567 END, 800, 790, NULL
            FROM generate_series(1, %s) AS g
            """,
            [month_start, rows, span, rows],
        )
        cursor.execute("ANALYZE usage_usagerecord")
    print(f"inserted {rows:,} usage records in {time.perf_counter() - started:.1f} s")

    from monitoring.overview import operator_overview
    from usage.rollups import rollup_rebuild_all

    started = time.perf_counter()
    rollup_rebuild_all()  # rows written straight into the table: their hourly rollups, once
    print(f"hourly rollups of the month rebuilt from the records: {time.perf_counter() - started:.2f} s")
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        result = operator_overview()
        timings.append((time.perf_counter() - started) * 1000)
    month = result["spend"][1][1]["total"]
    print(f"overview (steady state), 5 runs: median {statistics.median(timings):.0f} ms, best {min(timings):.0f} ms")
    print(f"month: {month.requests:,} requests, ${month.cost_usd:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
