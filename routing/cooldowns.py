"""Per-process deployment health: consecutive failures put a deployment in cooldown.

Kept per process on purpose: a failing upstream fails for every process alike, so each
learns it within ``cooldown_failures`` requests, and no shared state sits on the hot path.

An upstream that answers 429 (or 503) saying how long to wait (``Retry-After``,
``retry-after-ms``, OpenAI's ``x-ratelimit-reset-*``) puts the deployment in cooldown
for that long at once, capped by ``GATEWAY_RETRY_AFTER_MAX_SECONDS``: it has told us the
next call would fail too.
"""

from __future__ import annotations

from gatewaysite.clock import monotonic


class DeploymentCooldowns:
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

    def cool_for(self, deployment: str, seconds: float) -> None:
        """Cool the deployment down for ``seconds`` from now (never shortening a longer cooldown)."""
        if seconds <= 0:
            return
        until = monotonic() + seconds
        if until > self._cooled_until.get(deployment, 0.0):
            self._cooled_until[deployment] = until

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


cooldowns = DeploymentCooldowns()
