"""Explain a routing decision without making it: ``POST /v1/routing/explain`` and the admin rule tester.

The request is planned exactly as ``/v1/chat/completions`` would plan it (same strategy
precedence, same cooldowns, same rules), with ``dry_run`` set so that no strategy moves
its state (the round-robin position stays where it was) and no provider is called.
The JSON shape is documented in docs/routing.md ("Explain").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accounts.keycache import KeyInfo
from gatewaysite.clock import now
from routing.config.snapshot import DeploymentInfo, RuleInfo, Snapshot
from routing.health import health
from routing.inflight import in_flight
from routing.latency.live import live_latency
from routing.outlier import outliers
from routing.services.hedging import hedge_plan
from routing.services.planning import STRATEGY_HEADER, fits_context, plan_route, strategy_for
from routing.strategies.base import Ranking, RouteRequest
from routing.strategies.cost_slo import latency_objective
from routing.strategies.custom import check_rules
from usage.cost import estimate_cost, format_usd
from usage.ratelimits import DeploymentLimits, deployment_headroom


def explain_route_request(
    *,
    body: dict[str, Any],
    key: KeyInfo,
    snapshot: Snapshot,
    headers: dict[str, str] | None = None,
    strategy: str | None = None,
) -> RouteRequest:
    """A route request built outside an HTTP request (the admin rule tester).

    ``strategy`` forces a strategy the way an allowed ``x-gateway-strategy`` header would.
    ``body`` must already be validated (``validate_chat_body``).
    """
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    if strategy:
        lowered[STRATEGY_HEADER] = strategy
        snapshot = dataclasses.replace(
            snapshot, settings=dataclasses.replace(snapshot.settings, allow_request_strategy=True)
        )
    return RouteRequest(
        model=body["model"],
        body=body,
        stream=bool(body.get("stream")),
        key=key,
        snapshot=snapshot,
        headers=lowered,
    )


def _rule_dict(rule: RuleInfo | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "id": rule.id,
        "name": rule.name,
        "priority": rule.priority,
        "action": rule.action,
        "strategy": rule.strategy or None,
        "targets": list(rule.targets),
    }


def _excluded_reason(route: RouteRequest, deployment: DeploymentInfo, ranking: Ranking) -> str:
    if not fits_context(route, deployment):
        return "context_window_exceeded"
    if health.cooling(deployment.name):
        return "cooling_down"
    if outliers.ejected(deployment.name):
        return "ejected"
    if ranking.rule is not None:
        return "not_in_rule"
    return "not_ranked"


def routing_explain(*, route: RouteRequest) -> dict[str, Any]:
    """The ranking ``route`` would get now, with each candidate's scores. Calls no provider."""
    route = dataclasses.replace(route, dry_run=True)
    ranking = plan_route(route)  # raises 404/403 like the completion endpoint
    name, source = strategy_for(route)
    snapshot = route.snapshot
    input_tokens, tokenizer = route.input_tokens()
    output_tokens = route.expected_output_tokens()
    moment = now()
    latency = live_latency.stats()
    max_attempts = snapshot.settings.max_attempts
    min_samples = max(1, snapshot.settings.slo_min_samples)
    p95 = live_latency.quantiles(0.95, stream=route.stream, recent=min_samples)
    busy = in_flight.counts()
    outlier_state = outliers.status()

    headroom = deployment_headroom(
        [DeploymentLimits(d.id, d.rpm_limit, d.tpm_limit) for d in ranking.candidates], input_tokens
    )
    candidates = []
    tries = 0
    for rank, deployment in enumerate(ranking.candidates, start=1):
        price = snapshot.price_for(deployment, moment)
        mean = latency.get(deployment.name)
        limits = headroom[deployment.id]
        will_try = not limits["at_limit"] and tries < max_attempts  # at its rate limit: skipped, not tried
        tries += will_try
        candidates.append(
            {
                "rank": rank,
                "deployment": deployment.name,
                "provider": deployment.provider,
                "provider_model": deployment.provider_model,
                "will_try": will_try,
                "rate_limit": limits,
                "cooling_down": health.cooling(deployment.name),
                "estimated_cost_usd": (
                    format_usd(estimate_cost(input_tokens, output_tokens, price)) if price is not None else None
                ),
                "latency_ms": round(mean[0], 3) if mean is not None else None,
                "latency_samples": mean[1] if mean is not None else 0,
                "p95_ms": round(p95[deployment.name].ms, 3) if deployment.name in p95 else None,
                "in_flight": sum(busy.get(deployment.name, (0, 0))),
                "ejected": outliers.ejected(deployment.name),
                "outlier": outlier_state.get(deployment.name),
                "weight": deployment.weight,
                "priority": deployment.priority,
                "score": ranking.scores.get(deployment.name, {}),
            }
        )
    ranked = {d.name for d in ranking.candidates}
    excluded = [
        {"deployment": d.name, "provider": d.provider, "reason": _excluded_reason(route, d, ranking)}
        for d in snapshot.deployments_for(route.model)
        if d.name not in ranked
    ]
    rules = None
    if ranking.strategy == "custom":
        eligible = [d for d in snapshot.deployments_for(route.model) if not health.cooling(d.name)] or list(
            snapshot.deployments_for(route.model)
        )
        rules = [check.as_dict() for check in check_rules(route, eligible)]
    route.rule = ranking.rule
    objective, objective_source = latency_objective(route)
    plan = hedge_plan(route, ranking, ranking.candidates[:max_attempts])
    hedge = None
    if plan is not None:
        hedge = {
            "enabled": True,
            "delay_ms": round(plan.delay_seconds * 1000, 3) if plan.delay_seconds is not None else None,
            "delay_source": plan.delay_source,
            "backup": plan.backup.name,
            "budget_percent": snapshot.settings.hedge_budget_percent,
        }
    return {
        "object": "routing.explain",
        "model": route.model,
        "stream": route.stream,
        "endpoint": route.endpoint,
        "strategy": ranking.strategy or name,
        "strategy_source": source,
        "reason": ranking.reason,
        "rule": _rule_dict(ranking.rule),
        "chosen": next((c["deployment"] for c in candidates if c["will_try"]), None),
        "max_attempts": max_attempts,
        "tokens": {"input": input_tokens, "tokenizer": tokenizer, "expected_output": output_tokens},
        "candidates": candidates,
        "excluded": excluded,
        "rules": rules,
        "latency_objective": {"ms": objective, "source": objective_source},
        "hedge": hedge or {"enabled": False},
    }
