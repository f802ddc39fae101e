from __future__ import annotations

from collections.abc import Sequence

from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy


class ModelStrategy(Strategy):
    """The default: the model's deployments by priority (lower first), then name."""

    name = "model"
    description = "deployments of the requested model by priority"

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        ordered = sorted(candidates, key=lambda d: (d.priority, d.name))
        return Ranking(
            candidates=ordered,
            reason="priority",
            scores={d.name: {"priority": d.priority} for d in ordered},
        )
