"""``cost-slo``: the cheapest deployment whose recent p95 latency meets a latency objective.

The objective (milliseconds) is, first that is set: the request header
``x-gateway-latency-slo-ms`` (only when the operator allows it), the matching routing
rule's, the client key's, the gateway's (routing settings). With none, this is ``cost``.

The latency compared is the live p95 (routing/latency/live.py ``quantiles``) of the
deployment's most recent samples, shared by every gateway process: the time to first
token for a streaming request, the whole answer otherwise. A failed attempt counts as
``LATENCY_ERROR_PENALTY_MS``. A deployment is *measured* when the live window holds at
least ``slo_min_samples`` of its samples.

Order:
1. measured deployments meeting the objective, cheapest first (reason ``slo_met``);
2. when none meets it: deployments not measured yet, cheapest first - one of them may
   (``slo_unmeasured``); when every deployment is measured: the fastest (``slo_fastest``);
3. then the rest (fallbacks), fastest first.

Exploration, bounded: ``slo_explore_percent`` of requests (a per-process cadence, so
the total across processes is the same share) put first, in turn, a deployment that
could take traffic if the figures were fresh - one with too few samples, or one
cheaper than the pick whose p95 missed the objective (it may have recovered). That is
what brings traffic back to a cheaper deployment once its latency is back under the
objective: its few fresh samples are its most recent ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from routing.config.snapshot import DeploymentInfo
from routing.latency.live import live_latency
from routing.strategies.base import Ranking, RouteRequest, Strategy
from usage.cost import estimate_cost, format_usd

SLO_HEADER = "x-gateway-latency-slo-ms"
MAX_SLO_MS = 3_600_000


def latency_objective(request: RouteRequest) -> tuple[int | None, str]:
    """The objective in force for ``request`` (ms) and where it came from."""
    settings = request.snapshot.settings
    raw = request.headers.get(SLO_HEADER)
    if raw is not None and settings.allow_request_latency_slo:
        text = raw.strip()
        if not text.isdigit() or not 0 < int(text) <= MAX_SLO_MS:
            raise InvalidRequest(
                f"{SLO_HEADER} must be a whole number of milliseconds between 1 and {MAX_SLO_MS}.",
                code="invalid_latency_slo",
                param=SLO_HEADER,
            )
        return int(text), "request"
    if request.rule is not None and request.rule.latency_slo_ms:
        return request.rule.latency_slo_ms, "rule"
    if request.key.latency_slo_ms:
        return request.key.latency_slo_ms, "key"
    if settings.latency_slo_ms:
        return settings.latency_slo_ms, "gateway"
    return None, "none"


class CostSloStrategy(Strategy):
    name = "cost-slo"
    description = "cheapest deployment whose live p95 meets the latency objective; none: the fastest"

    def __init__(self) -> None:
        self._turn = 0  # requests seen; a lost update under a race only shifts the cadence

    def choose(self, request: RouteRequest, candidates: Sequence[DeploymentInfo]) -> Ranking:
        settings = request.snapshot.settings
        objective, source = latency_objective(request)
        min_samples = max(1, settings.slo_min_samples)
        input_tokens, _ = request.input_tokens()
        output_tokens = request.expected_output_tokens()
        moment = now()
        costs: dict[str, Decimal | None] = {}
        for deployment in candidates:
            price = request.snapshot.price_for(deployment, moment)
            costs[deployment.name] = estimate_cost(input_tokens, output_tokens, price) if price is not None else None
        p95 = live_latency.quantiles(0.95, stream=request.stream, recent=min_samples)

        def cost_key(d: DeploymentInfo) -> tuple[Any, ...]:
            cost = costs[d.name]
            return (cost is None, cost if cost is not None else Decimal(0), d.priority, d.name)

        def latency_of(d: DeploymentInfo) -> float | None:
            figure = p95.get(d.name)
            return figure.ms if figure is not None and figure.window_samples >= min_samples else None

        measured = [d for d in candidates if latency_of(d) is not None]
        unmeasured = sorted((d for d in candidates if latency_of(d) is None), key=cost_key)
        by_speed = sorted(measured, key=lambda d: (latency_of(d), *cost_key(d)))
        if objective is None:
            meeting = sorted(candidates, key=cost_key)
            reason = "cheapest_no_objective"
        else:
            meeting = sorted((d for d in measured if latency_of(d) <= objective), key=cost_key)  # type: ignore[operator]  # measured: latency_of is not None
            reason = "slo_met"
        if meeting:
            head = meeting
        elif unmeasured:
            head, reason = unmeasured, "slo_unmeasured"
        else:
            head, reason = by_speed[:1], "slo_fastest"
        ordered = list(head) + [d for d in by_speed + unmeasured if d not in head]

        explore_percent = settings.slo_explore_percent
        if objective is not None and explore_percent > 0 and len(ordered) > 1:
            pick = ordered[0]
            explorable = [
                d
                for d in candidates
                if d is not pick and (latency_of(d) is None or (cost_key(d) < cost_key(pick) and d not in meeting))
            ]
            if explorable:
                every = max(1, round(100 / explore_percent))
                turn = self._turn + 1
                if not request.dry_run:  # explain ranks without moving the cadence
                    self._turn = turn
                if turn % every == 0:
                    explorable.sort(key=cost_key)
                    chosen = explorable[(turn // every) % len(explorable)]
                    ordered.remove(chosen)
                    ordered.insert(0, chosen)
                    reason = "slo_explore"

        scores: dict[str, dict[str, Any]] = {}
        for d in ordered:
            figure = p95.get(d.name)
            latency = latency_of(d)
            cost = costs[d.name]
            scores[d.name] = {
                "estimated_cost_usd": format_usd(cost) if cost is not None else None,
                "p95_ms": round(figure.ms, 3) if figure is not None else None,
                "p95_samples": figure.samples if figure is not None else 0,
                "window_samples": figure.window_samples if figure is not None else 0,
                "measured": latency is not None,
                "meets_objective": (latency <= objective) if latency is not None and objective is not None else None,
                "objective_ms": objective,
                "objective_source": source,
                "latency_kind": "ttft" if request.stream else "total",
            }
        return Ranking(candidates=ordered, reason=reason, scores=scores)
