"""Hedged requests: a second copy of a request that is slow to produce its first byte.

Optional, per routing rule (``hedge``, ``hedge_delay_ms``) or for the whole gateway
(routing settings ``hedge_enabled``, ``hedge_delay_ms``, ``hedge_budget_percent``).
When the first attempt has produced nothing after the *hedge delay* - a fixed value, or
the chosen deployment's live p95 (routing/latency/live.py; no hedging while it has too
few samples to know it) - the same request goes to the next candidate (the same
deployment when it is the only one). The first to answer wins; the other is cancelled:
its sockets are shut down (providers/http.py ``CancelScope``), so its connection is
closed, never returned to the pool. For a non-streaming request "answer" means the
whole answer; a stream hedges only before its first event, and the winner is the first
to send one: nothing reached the client before, so nothing is sent twice.

A failure is not an answer: when one attempt fails while the other is still running,
the other is waited for. When both fail, the usual fallback goes on with the candidates
not tried yet.

Budget (per process): each request that may hedge earns ``hedge_budget_percent / 100``
of a token, a hedge spends one, and at most ``BURST_TOKENS`` are kept, so hedges add at
most that share of upstream requests (plus the burst), whatever the latency does.

Attempts run in threads - greenlets under gunicorn's gevent worker, whose monkey
patching makes ``threading`` and ``queue`` cooperative. Both attempts are recorded
(latency samples, usage record: ``hedged``, ``hedge_cost_usd``) and billed: the loser
at its real cost when it finished anyway, else estimated as the request's input tokens
at its price (the provider had the prompt; what it generated before the cut is unknown).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gatewaysite.clock import monotonic, now
from providers.adapters.base import Completion, UpstreamError
from providers.adapters.registry import adapter_for
from providers.http import CancelScope, cancel_scope
from routing.config.snapshot import DeploymentInfo
from routing.inflight import in_flight
from routing.latency.live import live_latency
from routing.strategies.base import Ranking, RouteRequest

logger = logging.getLogger(__name__)

BURST_TOKENS = 5.0
CANCELLED_CODE = "hedge_cancelled"
CANCELLED_STATUS = 499  # nginx's "client closed request": the gateway closed it


class HedgeBudget:
    """Per-process token bucket bounding the extra upstream requests hedging adds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens = 0.0
        self.requests = 0
        self.hedges = 0

    def earn(self, percent: float) -> None:
        with self._lock:
            self.requests += 1
            self.tokens = min(BURST_TOKENS, self.tokens + max(0.0, percent) / 100)

    def spend(self) -> bool:
        with self._lock:
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            self.hedges += 1
            return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"tokens": round(self.tokens, 3), "requests": self.requests, "hedges": self.hedges}

    def reset(self) -> None:
        with self._lock:
            self.tokens = 0.0
            self.requests = self.hedges = 0


budget = HedgeBudget()


@dataclass(frozen=True)
class HedgePlan:
    delay_seconds: float | None  # None: the primary's p95 is not known yet (no hedge)
    delay_source: str  # "rule", "gateway" or "live_p95"
    backup: DeploymentInfo


def hedge_plan(route: RouteRequest, ranking: Ranking, candidates: list[DeploymentInfo]) -> HedgePlan | None:
    """Whether this request hedges, after how long, and to which deployment (None: it does not)."""
    settings = route.snapshot.settings
    rule = ranking.rule
    enabled = rule.hedge if rule is not None and rule.hedge is not None else settings.hedge_enabled
    if not enabled or not candidates:
        return None
    primary = candidates[0]
    backup = candidates[1] if len(candidates) > 1 else primary
    if rule is not None and rule.hedge_delay_ms:
        return HedgePlan(rule.hedge_delay_ms / 1000, "rule", backup)
    if settings.hedge_delay_ms:
        return HedgePlan(settings.hedge_delay_ms / 1000, "gateway", backup)
    min_samples = max(1, settings.slo_min_samples)
    figure = live_latency.quantiles(0.95, stream=route.stream, recent=min_samples).get(primary.name)
    if figure is None or figure.window_samples < min_samples:
        return HedgePlan(None, "live_p95", backup)
    return HedgePlan(figure.ms / 1000, "live_p95", backup)


@dataclass
class Leg:
    """One attempt of a hedged request, run in its own greenlet."""

    deployment: DeploymentInfo
    hedge: bool  # the second copy
    started: float = field(default_factory=monotonic)
    started_at: datetime = field(default_factory=now)
    scope: CancelScope = field(default_factory=CancelScope)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    cancel_requested: bool = False
    cancelled: bool = False  # cut before it finished
    completion: Completion | None = None
    upstream: Iterator[dict[str, Any]] | None = None
    first: dict[str, Any] | None = None
    error: UpstreamError | None = None
    upstream_ms: float = 0.0
    ttft_ms: float | None = None
    holds_busy: bool = False

    def lose(self) -> None:
        """Stop this attempt: cut it if it is still running, close its stream if it had one."""
        with self.lock:
            running = not self.done
            if running:
                self.cancel_requested = True
        if running:
            self.cancelled = True
            self.upstream_ms = (monotonic() - self.started) * 1000
            self.scope.cancel()
            return
        if self.upstream is not None:  # a stream that started too, later: close it (its connection is not reused)
            try:
                self.upstream.close()  # type: ignore[attr-defined]  # the adapters' streams are generators
            finally:
                self.upstream = None
                self._release_busy()

    def _release_busy(self) -> None:
        if self.holds_busy:
            self.holds_busy = False
            in_flight.release(self.deployment.name)


def _run(leg: Leg, route: RouteRequest, finished: queue.Queue[Leg]) -> None:
    deployment = leg.deployment
    with cancel_scope(leg.scope):
        try:
            adapter = adapter_for(deployment.kind)
            if route.stream:
                upstream = adapter.stream(deployment.target, route.body)
                first = next(upstream, None)
                leg.ttft_ms = (monotonic() - leg.started) * 1000
                if first is None:
                    upstream.close()  # type: ignore[attr-defined]  # the adapters' streams are generators
                    raise UpstreamError(f"{deployment.provider}: empty stream", status=502)
                leg.upstream, leg.first = upstream, first
            else:
                leg.completion = adapter.complete(deployment.target, route.body)
        except UpstreamError as error:
            leg.error = error
        except Exception:
            if leg.scope.cancelled:
                leg.error = UpstreamError(f"{deployment.provider}: cancelled", status=CANCELLED_STATUS)
            else:
                logger.exception("adapter %s failed on deployment %s", deployment.kind, deployment.name)
                leg.error = UpstreamError(
                    f"{deployment.provider}: the gateway could not translate the answer", status=502
                )
        finally:
            if not leg.cancelled:
                leg.upstream_ms = (monotonic() - leg.started) * 1000
            with leg.lock:
                leg.done = True
                orphan = leg.cancel_requested
            if leg.upstream is None or orphan:
                if orphan and leg.upstream is not None:
                    leg.upstream.close()  # type: ignore[attr-defined]  # the adapters' streams are generators
                    leg.upstream = None
                leg._release_busy()
            finished.put(leg)


def _start(deployment: DeploymentInfo, route: RouteRequest, finished: queue.Queue[Leg], *, hedge: bool) -> Leg:
    leg = Leg(deployment=deployment, hedge=hedge)
    in_flight.acquire(deployment.name)
    leg.holds_busy = True
    threading.Thread(target=_run, args=(leg, route, finished), daemon=True, name="hedge-attempt").start()
    return leg


def _bound(deployment: DeploymentInfo, stream: bool) -> float:
    """How long waiting on one attempt can take at most: its own deadlines, plus slack."""
    target = deployment.target
    return target.connect_timeout + (target.first_chunk_timeout if stream else target.response_timeout) + 5.0


def race(route: RouteRequest, primary: DeploymentInfo, plan: HedgePlan) -> tuple[list[Leg], Leg | None]:
    """Run the primary attempt, hedge it after the delay if the budget allows; the legs and the winner."""
    settings = route.snapshot.settings
    finished: queue.Queue[Leg] = queue.Queue()
    budget.earn(settings.hedge_budget_percent)
    legs = [_start(primary, route, finished, hedge=False)]
    leg: Leg | None = None
    if plan.delay_seconds is not None:
        try:
            leg = finished.get(timeout=plan.delay_seconds)
        except queue.Empty:
            if budget.spend():
                legs.append(_start(plan.backup, route, finished, hedge=True))
    bound = max(_bound(primary, route.stream), _bound(plan.backup, route.stream))
    seen: list[Leg] = []
    try:
        if leg is None:
            leg = finished.get(timeout=bound)
        seen.append(leg)
        while leg.error is not None and len(seen) < len(legs):
            leg = finished.get(timeout=bound)
            seen.append(leg)
    except queue.Empty:  # every attempt has deadlines shorter than this: a safety net only
        for other in legs:
            other.lose()
            other.error = other.error or UpstreamError(
                f"{other.deployment.provider}: no answer", status=504, code="upstream_timeout"
            )
        return legs, None
    winner = leg if leg.error is None else None
    for other in legs:
        if other is not winner:
            other.lose()
    return legs, winner
