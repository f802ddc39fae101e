"""``cost``: the cheapest deployment for this request first.

Each deployment's cost is estimated from the request's input tokens (counted once) and
its expected output tokens (``max_tokens``/``max_completion_tokens``, else the default
``GATEWAY_DEFAULT_EXPECTED_OUTPUT_TOKENS``), at the deployment's price in effect now.
Equal costs go to the lower live mean latency (deployments without latency samples after
those with), then to the lower priority, then by name. A deployment without a price row
ranks after every priced one: its cost is unknown, not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from gatewaysite.clock import now
from providers.pricing.cost import estimate_cost, format_usd
from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy
from usage.latency.live import live_latency


class CostStrategy(Strategy):
    name = "cost"
    description = "cheapest estimated cost for this request first; ties: lower latency, then priority"

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        input_tokens, _ = request.input_tokens()
        output_tokens = request.expected_output_tokens()
        moment = now()
        latency = live_latency.stats()
        costs: dict[str, Decimal | None] = {}
        for deployment in candidates:
            price = request.snapshot.price_for(deployment, moment)
            costs[deployment.name] = estimate_cost(input_tokens, output_tokens, price) if price is not None else None

        def order(d: DeploymentInfo) -> tuple[Any, ...]:
            cost = costs[d.name]
            mean = latency.get(d.name)
            return (
                cost is None,
                cost if cost is not None else Decimal(0),
                mean is None,
                mean[0] if mean is not None else 0.0,
                d.priority,
                d.name,
            )

        ordered = sorted(candidates, key=order)
        scores: dict[str, dict[str, Any]] = {}
        for d in ordered:
            mean = latency.get(d.name)
            cost = costs[d.name]
            scores[d.name] = {
                "estimated_cost_usd": format_usd(cost) if cost is not None else None,
                "latency_ms": round(mean[0], 3) if mean is not None else None,
                "latency_samples": mean[1] if mean is not None else 0,
                "priority": d.priority,
            }
        return Ranking(candidates=ordered, reason="cheapest", scores=scores)
