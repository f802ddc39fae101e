from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy
from usage.latency.live import live_latency


class LatencyStrategy(Strategy):
    """The deployment with the lowest recent latency first (usage/latency/live.py).

    A deployment with fewer than ``LATENCY_MIN_SAMPLES`` samples in the live window has
    no reliable figure: it is ranked after the measured ones, except that one request in
    ``LATENCY_EXPLORE_EVERY`` tries such a deployment first (in turn), so new deployments
    get measured and one that was avoided for being slow gets another chance once its
    old samples leave the window. With nothing measured yet: by priority.
    """

    name = "latency"
    description = "lowest recent latency, exploring deployments without recent samples"

    def __init__(self) -> None:
        self._turn = 0  # requests that could explore; a lost update under a race only shifts the cadence

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        conf = settings.GATEWAY
        min_samples = conf["LATENCY_MIN_SAMPLES"]
        explore_every = conf["LATENCY_EXPLORE_EVERY"]
        stats = live_latency.stats()
        measured: list[DeploymentInfo] = []
        unmeasured: list[DeploymentInfo] = []
        for deployment in candidates:
            _, samples = stats.get(deployment.name, (0.0, 0))
            (measured if samples >= min_samples else unmeasured).append(deployment)
        measured.sort(key=lambda d: (stats[d.name][0], d.priority, d.name))
        unmeasured.sort(key=lambda d: (d.priority, d.name))
        reason = "lowest_latency"
        if not measured:
            reason = "no_recent_samples"
        elif unmeasured and explore_every:
            turn = self._turn + 1
            if not request.dry_run:  # explain ranks without moving the cadence
                self._turn = turn
            if turn % explore_every == 0:
                pick = unmeasured.pop((turn // explore_every) % len(unmeasured))
                measured.insert(0, pick)
                reason = "explore"
        ordered = measured + unmeasured
        scores = {}
        for deployment in ordered:
            mean_ms, samples = stats.get(deployment.name, (None, 0))
            scores[deployment.name] = {
                "mean_ms": round(mean_ms, 3) if mean_ms is not None else None,
                "samples": samples,
            }
        return Ranking(candidates=ordered, reason=reason, scores=scores)
