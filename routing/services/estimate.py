"""What a chat completion would cost, per candidate deployment, before sending it.

``POST /v1/routing/estimate-cost``. The request is planned as ``/v1/chat/completions``
would plan it (``dry_run``: no strategy state moves, no provider is called). For each
deployment of the model: the input tokens counted with that deployment's tokenizer
(tiktoken for OpenAI-family models, the named ``approx-chars/4`` approximation
otherwise, or when tiktoken's encodings cannot be loaded), the expected output tokens
(``max_completion_tokens`` / ``max_tokens``, else ``GATEWAY_DEFAULT_EXPECTED_OUTPUT_TOKENS``),
and the cost at the price in effect now. A deployment without a price has an unknown
cost (``null``), never zero. An embeddings body (``input``) is estimated the same way with
no output tokens (``expected_output_tokens_source: "none"``). The JSON shape is documented
in docs/cost.md.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from django.conf import settings

from gatewaysite.clock import now
from providers.pricing.cost import estimate_cost, format_usd
from providers.pricing.prices import Price
from routing.cooldowns import cooldowns
from routing.services.planning import plan_route
from routing.strategies.base import RouteRequest
from usage.tokens import APPROXIMATION, count_embedding_tokens, count_input_tokens, expected_output_tokens


def _price_dict(price: Price | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "id": price.id,
        "input_per_mtok": format_usd(price.input_per_mtok),
        "output_per_mtok": format_usd(price.output_per_mtok),
        "cached_input_per_mtok": format_usd(price.cached_input_per_mtok),
        "cache_write_per_mtok": format_usd(price.cache_write_per_mtok),
        "cache_write_1h_per_mtok": format_usd(
            price.cache_write_1h_per_mtok if price.cache_write_1h_per_mtok is not None else price.cache_write_per_mtok
        ),
        "effective_from": price.effective_from.isoformat(),
    }


def _output_source(body: dict[str, Any]) -> str:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return name
    return "default"


def routing_estimate(*, route: RouteRequest) -> dict[str, Any]:
    route = dataclasses.replace(route, dry_run=True)
    ranking = plan_route(route)  # 404 / 403 exactly like the completion endpoint
    at = now()
    snapshot = route.snapshot
    chosen = ranking.candidates[0] if ranking.candidates else None
    order = {d.name: i for i, d in enumerate(ranking.candidates)}
    deployments = sorted(snapshot.deployments_for(route.model), key=lambda d: (order.get(d.name, len(order)), d.name))
    embeddings = route.endpoint == "embeddings"
    output_tokens = 0 if embeddings else expected_output_tokens(route.body)
    counts: dict[str, tuple[int, str]] = {}
    candidates: list[dict[str, Any]] = []
    costs: list[Decimal] = []
    for deployment in deployments:
        tokenizer_model = deployment.provider_model
        if tokenizer_model not in counts:
            counts[tokenizer_model] = (
                count_embedding_tokens(tokenizer_model, route.body.get("input"))
                if embeddings
                else count_input_tokens(tokenizer_model, route.body)
            )
        input_tokens, tokenizer = counts[tokenizer_model]
        price = snapshot.price_for(deployment, at)
        cost = estimate_cost(input_tokens, output_tokens, price) if price is not None else None
        if cost is not None:
            costs.append(cost)
        rank = order.get(deployment.name)
        candidates.append(
            {
                "deployment": deployment.name,
                "provider": deployment.provider,
                "provider_model": deployment.provider_model,
                "rank": rank + 1 if rank is not None else None,
                "chosen": chosen is not None and deployment.name == chosen.name,
                "excluded": None
                if rank is not None
                else ("cooling_down" if cooldowns.cooling(deployment.name) else "not_ranked"),
                "input_tokens": input_tokens,
                "tokenizer": tokenizer,
                "tokenizer_exact": tokenizer != APPROXIMATION,
                "expected_output_tokens": output_tokens,
                "priced": price is not None,
                "price": _price_dict(price),
                "estimated_cost_usd": format_usd(cost) if cost is not None else None,
            }
        )
    chosen_entry = next((c for c in candidates if c["chosen"]), None)
    return {
        "object": "routing.cost_estimate",
        "model": route.model,
        "endpoint": route.endpoint,
        "currency": "USD",
        "strategy": ranking.strategy,
        "route_reason": ranking.reason,
        "chosen": chosen_entry["deployment"] if chosen_entry else None,
        "estimated_cost_usd": chosen_entry["estimated_cost_usd"] if chosen_entry else None,
        "max_cost_usd": format_usd(max(costs)) if costs else None,
        "expected_output_tokens": output_tokens,
        "expected_output_tokens_source": "none" if embeddings else _output_source(route.body),
        "default_expected_output_tokens": int(settings.GATEWAY["DEFAULT_EXPECTED_OUTPUT_TOKENS"]),
        "candidates": candidates,
    }
