"""``cost-slo``: the cheapest deployment whose recent p95 latency meets a latency objective.

The objective (milliseconds) is, first that is set: the request header
``x-gateway-latency-slo-ms`` (only when the operator allows it), the matching routing
rule's, the client key's, the gateway's (routing settings). With none, this is ``cost``.

The latency compared is the live p95 (usage/latency/live.py ``quantiles``) of the
deployment's most recent samples, shared by every gateway process: the time to first
token for a streaming request, the whole answer otherwise, timed around the upstream
call alone (the gateway's own work before it - parsing, planning, admission - is not in
it). A failed attempt counts as ``LATENCY_ERROR_PENALTY_MS``. A deployment is
*measured* when the live window holds at least ``slo_min_samples`` of its samples.

A measured deployment *misses* the objective when the p95 of its newest samples is over
it and so was the p95 of the samples before those (``LiveQuantile.previous_ms``, read
from seconds at least a second older; without enough older samples the newest read
decides alone). Over in the newest read only, it still counts as meeting (``held``):
the p95 of twenty-odd samples is their second largest, and a moment of CPU starvation
that answers every request in flight late is enough to push it over once. Leaving on
that single read moves all traffic to a pricier deployment, which cannot come back
before exploration has replaced those samples (tens of seconds). A deployment whose
latency really rose is left once the next second's samples confirm it; one that has
recovered is taken back on its newest read alone.

Order:
1. deployments meeting the objective, cheapest first (reason ``slo_met``, or
   ``slo_held`` when the first one meets it only by the hold above);
2. when none meets it: deployments not measured yet, cheapest first - one of them may
   (``slo_unmeasured``); when every deployment is measured: the fastest (``slo_fastest``);
3. then the rest (fallbacks), fastest first.

Exploration, bounded: a choice puts first, in turn, a deployment that could take traffic
if the figures were fresh - one with too few samples, or one cheaper than the pick that
misses the objective (it may have recovered: its few fresh samples are its newest ones,
which is what brings traffic back to it) - when the process's exploration credit allows:
every choice under an objective adds ``slo_explore_percent`` % of one choice to the
credit, capped at one choice, and exploring spends one. So each process explores at
most ``slo_explore_percent`` % of its choices plus one, with no burst after a stretch
with nothing to explore, and the whole gateway at most that share plus one choice per
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from providers.pricing.cost import estimate_cost, format_usd
from routing.config.snapshot import DeploymentInfo
from routing.strategies.base import Ranking, RouteRequest, Strategy
from usage.latency.live import live_latency

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


# Exploration credit is counted in millionths of a choice, so that percentages add up exactly.
_CHOICE = 1_000_000
_PER_PERCENT = _CHOICE // 100


class CostSloStrategy(Strategy):
    name = "cost-slo"
    description = "cheapest deployment whose live p95 meets the latency objective; none: the fastest"

    def __init__(self) -> None:
        # Per process. Under gevent nothing yields between the reads and writes below; under
        # threads a lost update only shifts the cadence by a choice.
        self._credit = 0  # exploration credit, in millionths of a choice (at most one choice)
        self._explored = 0  # exploring choices made: whose turn it is among the explorable

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

        def previous_of(d: DeploymentInfo) -> float | None:
            figure = p95.get(d.name)
            return figure.previous_ms if figure is not None and figure.previous_samples >= min_samples else None

        def held(d: DeploymentInfo) -> bool:
            """Over the objective in its newest read only: it still counts as meeting it."""
            latency, previous = latency_of(d), previous_of(d)
            return (
                objective is not None
                and latency is not None
                and latency > objective
                and previous is not None
                and previous <= objective
            )

        def meets(d: DeploymentInfo) -> bool:
            latency = latency_of(d)
            return objective is not None and latency is not None and (latency <= objective or held(d))

        measured = [d for d in candidates if latency_of(d) is not None]
        unmeasured = sorted((d for d in candidates if latency_of(d) is None), key=cost_key)
        by_speed = sorted(measured, key=lambda d: (latency_of(d), *cost_key(d)))
        if objective is None:
            meeting = sorted(candidates, key=cost_key)
            reason = "cheapest_no_objective"
        else:
            meeting = sorted((d for d in measured if meets(d)), key=cost_key)
            reason = "slo_held" if meeting and held(meeting[0]) else "slo_met"
        if meeting:
            head = meeting
        elif unmeasured:
            head, reason = unmeasured, "slo_unmeasured"
        else:
            head, reason = by_speed[:1], "slo_fastest"
        ordered = list(head) + [d for d in by_speed + unmeasured if d not in head]

        explore_percent = settings.slo_explore_percent
        if objective is not None and explore_percent > 0 and len(ordered) > 1:
            credit = self._credit + round(explore_percent * _PER_PERCENT)
            pick = ordered[0]
            explorable = sorted(
                (
                    d
                    for d in candidates
                    if d is not pick and (latency_of(d) is None or (cost_key(d) < cost_key(pick) and d not in meeting))
                ),
                key=cost_key,
            )
            explore = bool(explorable) and credit >= _CHOICE
            if explore:
                chosen = explorable[self._explored % len(explorable)]
                ordered.remove(chosen)
                ordered.insert(0, chosen)
                reason = "slo_explore"
            if not request.dry_run:  # explain ranks without spending the credit or moving the turn
                self._credit = min(_CHOICE, credit - _CHOICE if explore else credit)  # capped: no burst
                self._explored += explore

        scores: dict[str, dict[str, Any]] = {}
        for d in ordered:
            figure = p95.get(d.name)
            latency = latency_of(d)
            previous = previous_of(d)
            cost = costs[d.name]
            scores[d.name] = {
                "estimated_cost_usd": format_usd(cost) if cost is not None else None,
                "p95_ms": round(figure.ms, 3) if figure is not None else None,
                "p95_samples": figure.samples if figure is not None else 0,
                "previous_p95_ms": round(previous, 3) if previous is not None else None,
                "window_samples": figure.window_samples if figure is not None else 0,
                "measured": latency is not None,
                "meets_objective": meets(d) if latency is not None and objective is not None else None,
                "held": held(d),
                "objective_ms": objective,
                "objective_source": source,
                "latency_kind": "ttft" if request.stream else "total",
            }
        return Ranking(candidates=ordered, reason=reason, scores=scores)
