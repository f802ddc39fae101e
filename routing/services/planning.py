"""Choosing where a request goes: the strategy in force, then its ordered candidates."""

from __future__ import annotations

from gatewaysite.api.errors import InvalidRequest, ModelNotFound, PermissionDenied
from routing.cooldowns import cooldowns
from routing.strategies.base import Ranking, RouteRequest
from routing.strategies.registry import get_strategy, strategy_names

STRATEGY_HEADER = "x-gateway-strategy"


def strategy_for(request: RouteRequest) -> tuple[str, str]:
    """The strategy name in force and where it came from: request header, key, or gateway."""
    settings = request.snapshot.settings
    requested = request.headers.get(STRATEGY_HEADER)
    if requested and settings.allow_request_strategy:
        if requested not in strategy_names():
            raise InvalidRequest(
                f"Unknown strategy {requested!r} in {STRATEGY_HEADER}; valid: {', '.join(strategy_names())}.",
                code="invalid_strategy",
            )
        return requested, "request"
    if request.key.strategy and request.key.strategy in strategy_names():
        return request.key.strategy, "key"
    name = settings.strategy if settings.strategy in strategy_names() else "model"
    return name, "gateway"


def check_model_access(request: RouteRequest) -> None:
    deployments = request.snapshot.deployments_for(request.model)
    if not deployments:
        raise ModelNotFound(f"The model '{request.model}' does not exist or is not available.", param="model")
    if deployments[0].endpoint != request.serves:  # a model's deployments all serve one endpoint
        raise InvalidRequest(
            wrong_endpoint_message(request.model, deployments[0].endpoint), code="wrong_endpoint", param="model"
        )
    if not request.key.may_use(request.model):
        raise PermissionDenied(f"This API key may not use the model '{request.model}'.", param="model")


def wrong_endpoint_message(model: str, serves: str) -> str:
    if serves == "embeddings":
        return f"The model '{model}' is an embedding model; call POST /v1/embeddings."
    return f"The model '{model}' is a chat model; call POST /v1/chat/completions or POST /v1/messages."


def plan_route(request: RouteRequest) -> Ranking:
    """Ordered deployments to try. Deployments in cooldown are skipped unless all are."""
    check_model_access(request)
    deployments = request.snapshot.deployments_for(request.model)
    available = [d for d in deployments if not cooldowns.cooling(d.name)] or list(deployments)
    name, source = strategy_for(request)
    ranking = get_strategy(name).choose(request, available)
    if not ranking.strategy:
        ranking.strategy = name
    if source != "gateway" and not ranking.reason.startswith(source):
        ranking.reason = f"{source}:{ranking.reason}" if ranking.reason else source
    return ranking
