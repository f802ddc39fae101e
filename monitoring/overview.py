"""Everything the operator overview page shows, from rollups and counters (never a scan of the usage records).

- spend today and this month by team, key and model (monitoring/spend.py);
- requests, errors and p95 per deployment over the last hour (the latency rollups);
- budgets above 80% (the budget counters), unpriced deployments (the prices);
- ingestion lag (the usage stream) and dead letters (when the build has them).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from gatewaysite.clock import monotonic, now
from monitoring import selectors
from monitoring.charts import bar_chart
from monitoring.spend import SpendBreakdown, spend_summary
from providers.pricing.selectors import deployments_unpriced
from usage.latency.selectors import latency_by_deployment

BUDGET_ALERT = Decimal("0.8")


def _spend_panel(breakdown: SpendBreakdown) -> dict[str, Any]:
    def chart(groups: dict[str, Any]) -> dict[str, Any]:
        return bar_chart([(name, totals.cost_usd) for name, totals in groups.items()])

    return {
        "total": breakdown.total,
        "charts": [
            ("team", chart(breakdown.by_team)),
            ("key", chart(breakdown.by_key)),
            ("model", chart(breakdown.by_model)),
        ],
    }


def _deployments(since_minutes: int = 60) -> list[dict[str, Any]]:

    stats = latency_by_deployment(since=now() - timedelta(minutes=since_minutes))
    rows = []
    for name in sorted(stats):
        summary = stats[name].summary()
        rows.append(
            {
                "deployment": name,
                "provider": stats[name].provider,
                "requests": summary["samples"],
                "errors": summary["errors"],
                "error_rate": summary["error_rate"],
                "p95_ms": summary["latency_ms"].get("p95"),
            }
        )
    return rows


def operator_overview() -> dict[str, Any]:

    started = monotonic()
    today, month = spend_summary()
    budgets = [b for b in selectors.budget_utilization() if b.ratio >= BUDGET_ALERT]
    dead_model = selectors.dead_letter_model()
    dead_letters = None
    if dead_model is not None:
        dead_letters = {"count": dead_model.objects.count(), "latest": list(dead_model.objects.order_by("-pk")[:10])}
    return {
        "spend": [("today", _spend_panel(today)), ("this month", _spend_panel(month))],
        "deployments": _deployments(),
        "budgets": sorted(budgets, key=lambda b: -b.ratio),
        "unpriced": deployments_unpriced(),
        "stream": selectors.usage_stream_state(),
        "dead_letters": dead_letters,
        "generated_at": now(),
        "elapsed_ms": round((monotonic() - started) * 1000, 1),
    }
