"""``least-busy``: the deployment with the fewest in-flight requests, per unit of weight.

For long streams, where round-robin spreads the *starts* evenly but a deployment whose
answers run longer piles up open streams. The count is across every gateway process
(routing/inflight.py: this process's exact count plus the others' as of their last
report, shared in the live-latency sync's round trip, no extra Redis call per request).

Score: ``in_flight / weight`` (weight 0 counts as ``1/1000``: used only when the others
are far busier); lower first. Ties: the higher weight, then priority, then name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routing.config.snapshot import DeploymentInfo
from routing.inflight import in_flight
from routing.strategies.base import Ranking, RouteRequest, Strategy


class LeastBusyStrategy(Strategy):
    name = "least-busy"
    description = "fewest in-flight requests across processes, per unit of weight"

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        counts = in_flight.counts()

        def busy(d: DeploymentInfo) -> int:
            local, others = counts.get(d.name, (0, 0))
            return local + others

        def score(d: DeploymentInfo) -> float:
            weight = d.weight if d.weight > 0 else 0.001
            return busy(d) / weight

        ordered = sorted(candidates, key=lambda d: (score(d), -d.weight, d.priority, d.name))
        scores: dict[str, dict[str, Any]] = {}
        for d in ordered:
            local, others = counts.get(d.name, (0, 0))
            scores[d.name] = {
                "in_flight": local + others,
                "in_flight_here": local,
                "in_flight_elsewhere": others,
                "weight": d.weight,
                "load": round(score(d), 4),
            }
        return Ranking(candidates=ordered, reason="least_busy", scores=scores)
