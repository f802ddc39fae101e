"""Choosing where a request goes: the strategy in force, then its ordered candidates."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from gatewaysite.api.errors import InvalidRequest, ModelNotFound, PermissionDenied
from routing.config.snapshot import DeploymentInfo
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


def requested_output_tokens(request: RouteRequest) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def fits_context(request: RouteRequest, deployment: DeploymentInfo) -> bool:
    """Whether the deployment's context window holds the input plus ``max_tokens`` (unknown window: yes)."""
    if deployment.context_window is None:
        return True
    return request.input_tokens()[0] + max(1, requested_output_tokens(request)) <= deployment.context_window


def _sized(request: RouteRequest, deployments: Sequence[DeploymentInfo]) -> list[DeploymentInfo]:
    """The deployments whose context window can hold the request; 400 when none can.

    Counting tokens costs a tokenizer pass, so it runs only when a cheap bound says it
    matters: no tokenizer counts more tokens than the body has bytes.
    """
    windows = [d.context_window for d in deployments if d.context_window is not None]
    if not windows:
        return list(deployments)
    bound = len(orjson.dumps(request.body)) + requested_output_tokens(request) + 1
    if bound <= min(windows):
        return list(deployments)
    sized = [d for d in deployments if fits_context(request, d)]
    if not sized:
        largest = max(windows)
        raise InvalidRequest(
            f"This model's maximum context length is {largest} tokens. However, you requested "
            f"{request.input_tokens()[0] + requested_output_tokens(request)} tokens "
            f"({request.input_tokens()[0]} in the messages, {requested_output_tokens(request)} in the completion). "
            "Please reduce the length of the messages or completion.",
            code="context_length_exceeded",
            param="messages",
        )
    return sized


def plan_route(request: RouteRequest) -> Ranking:
    """Ordered deployments to try. Deployments whose context window cannot hold the request are
    skipped (400 when all are); deployments in cooldown or ejected are skipped unless all are."""
    check_model_access(request)
    deployments = _sized(request, request.snapshot.deployments_for(request.model))
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
