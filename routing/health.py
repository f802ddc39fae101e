"""Per-process deployment health: consecutive failures put a deployment in cooldown.

Kept per process on purpose: a failing upstream fails for every process alike, so each
learns it within ``cooldown_failures`` requests, and no shared state sits on the hot path.
"""

from __future__ import annotations

from gatewaysite.clock import monotonic


class Health:
    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._cooled_until: dict[str, float] = {}

    def success(self, deployment: str) -> None:
        if deployment in self._failures:
            self._failures.pop(deployment, None)
            self._cooled_until.pop(deployment, None)

    def failure(self, deployment: str, *, threshold: int, cooldown_seconds: float) -> None:
        count = self._failures.get(deployment, 0) + 1
        self._failures[deployment] = count
        if threshold and count >= threshold:
            self._cooled_until[deployment] = monotonic() + cooldown_seconds
            self._failures[deployment] = 0

    def cooling(self, deployment: str) -> bool:
        until = self._cooled_until.get(deployment)
        if until is None:
            return False
        if until <= monotonic():
            self._cooled_until.pop(deployment, None)
            return False
        return True

    def status(self) -> dict[str, float]:
        """Deployments in cooldown now, with seconds left."""
        moment = monotonic()
        return {name: round(until - moment, 1) for name, until in self._cooled_until.items() if until > moment}

    def reset(self) -> None:
        self._failures.clear()
        self._cooled_until.clear()


health = Health()
