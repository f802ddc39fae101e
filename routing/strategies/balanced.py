"""``balanced``: smooth weighted round-robin over the eligible deployments of the model.

Each (model, eligible deployments and their weights) has its own cycle, so models are
balanced independently and a deployment that is disabled or cooling down simply drops
out of the set: the cycle of the remaining ones takes over, and the old one resumes
when the deployment comes back.

Smooth weighted round-robin (the nginx algorithm): every pick adds each deployment's
weight to its running score, takes the highest score, and subtracts the total weight
from the winner. Weights 5/1/1 give ``a a b a c a a`` rather than ``a a a a a b c``,
and over any ``total weight`` consecutive picks each deployment gets exactly its weight.

The position is kept per process, not in Redis (a design decision). Within one process
a deployment's count never differs from its exact share by more than one request, so
with P gateway processes the error per deployment is at most P requests, whatever the
total: 3,000 requests over 3 equal deployments stay within 1,000 +/- 1% for up to ten
processes. A shared Redis counter would make the split exact but cost one more round
trip (about a millisecond) on every request. ``tests/routing/test_balanced_processes.py``
checks the split against real gunicorn workers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy

_CycleKey = tuple[str, tuple[tuple[str, int], ...]]

# Distinct cycles are few (models x sets of healthy deployments); the bound only guards
# against a configuration that churns forever.
MAX_CYCLES = 10_000


class BalancedStrategy(Strategy):
    name = "balanced"
    description = "smooth weighted round-robin over the model's deployments (weights respected)"

    def __init__(self) -> None:
        self._scores: dict[_CycleKey, dict[str, int]] = {}
        self._lock = threading.Lock()

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        ordered = sorted(candidates, key=lambda d: d.name)
        weights = {d.name: max(0, d.weight) for d in ordered}
        if not any(weights.values()):  # all weights 0: share equally rather than refuse
            weights = dict.fromkeys(weights, 1)
        total = sum(weights.values())
        key: _CycleKey = (request.model, tuple(weights.items()))
        with self._lock:
            stored = self._scores.get(key)
            before = dict(stored) if stored is not None else dict.fromkeys(weights, 0)
            after = {name: score + weights[name] for name, score in before.items()}
            # ties go to the first name: max() keeps the first of equal scores
            winner = max(after, key=lambda name: after[name])
            after[winner] -= total
            if not request.dry_run:
                if stored is None and len(self._scores) >= MAX_CYCLES:
                    self._scores.clear()
                self._scores[key] = after
        # the fallback order is the order the cycle would pick next
        rest = sorted((d for d in ordered if d.name != winner), key=lambda d: (-after[d.name], d.name))
        chosen = next(d for d in ordered if d.name == winner)
        return Ranking(
            candidates=[chosen, *rest],
            reason="round-robin",
            scores={
                d.name: {
                    "weight": weights[d.name],
                    "share": round(weights[d.name] / total, 4),
                    "rr_score": before[d.name],
                }
                for d in ordered
            },
        )

    def reset(self) -> None:
        with self._lock:
            self._scores.clear()
