"""Choosing where a request goes: the strategy in force, then its ordered candidates."""

from __future__ import annotations

from gatewaysite.api.errors import InvalidRequest, ModelNotFound, PermissionDenied
from routing.health import health
from routing.outlier import outliers
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
    if not request.snapshot.deployments_for(request.model):
        raise ModelNotFound(f"The model '{request.model}' does not exist or is not available.", param="model")
    if not request.key.may_use(request.model):
        raise PermissionDenied(f"This API key may not use the model '{request.model}'.", param="model")


def plan_route(request: RouteRequest) -> Ranking:
    """Ordered deployments to try. Deployments in cooldown or ejected are skipped unless all are."""
    check_model_access(request)
    deployments = request.snapshot.deployments_for(request.model)
    outliers.tick(request.snapshot)
    available = [d for d in deployments if not health.cooling(d.name) and not outliers.ejected(d.name)] or list(
        deployments
    )
    name, source = strategy_for(request)
    ranking = get_strategy(name).choose(request, available)
    if not ranking.strategy:
        ranking.strategy = name
    if source != "gateway" and not ranking.reason.startswith(source):
        ranking.reason = f"{source}:{ranking.reason}" if ranking.reason else source
    return ranking
