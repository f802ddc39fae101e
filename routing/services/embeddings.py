"""``POST /v1/embeddings``: validate, route, call with fallback, price, record.

The same keys, strategies, rules, cooldowns, budgets and records as chat completions
(``RouteRequest.endpoint == "embeddings"``; the model's deployments must declare
``endpoint = embeddings``). Embeddings have input tokens only: a price row's output
price never applies. Providers that report no token count (Gemini) are billed the
gateway's own count of the input (``usage_estimated``).
"""

from __future__ import annotations

from typing import Any

import orjson

from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from providers.adapters.base import Embeddings, Usage
from providers.adapters.registry import adapter_for
from routing.config.snapshot import DeploymentInfo
from routing.services.completion import Attempt, CompletionResult, _as_gateway_error, _Call, _cost_headers
from routing.services.dispatch import AttemptsExhausted, first_success
from routing.services.planning import plan_route
from routing.strategies.base import RouteRequest
from usage.admission import admit

MAX_INPUTS = 2048  # OpenAI's limit on the items of one request
ENCODING_FORMATS = ("float", "base64")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be an empty string.", param="input")
        return
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string, an array of strings, an array of tokens or an array of token arrays.",
            param="input",
        )
    if len(value) > MAX_INPUTS and not all(_is_token(v) for v in value):
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    if all(_is_token(v) for v in value):
        return
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if isinstance(item, str):
            if not item:
                raise InvalidRequest(f"{where} must not be an empty string.", param=where)
        elif isinstance(item, list):
            if not item or not all(_is_token(t) for t in item):
                raise InvalidRequest(f"{where} must be a non-empty array of token ids.", param=where)
        else:
            raise InvalidRequest(f"{where} must be a string or an array of token ids.", param=where)


def validate_embeddings_body(body: Any) -> dict[str, Any]:
    """OpenAI's embeddings request, checked; errors are 400 with ``param``."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    if "input" not in body:
        raise InvalidRequest("'input' is required.", param="input")
    _check_input(body["input"])
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer.", param="dimensions")
    encoding_format = body.get("encoding_format")
    if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", param="user")
    return body


def run_embeddings(route: RouteRequest, *, request_id: str, received: float) -> CompletionResult:
    call = _Call(route=route, request_id=request_id, received=received, received_at=now())
    call.ranking = plan_route(route)
    call.admission = admit(route, call.ranking.candidates)  # rate limits and budget: one round trip
    call.reservation = call.admission.reservation

    def send(deployment: DeploymentInfo, attempt: Attempt, started: float) -> Embeddings:
        return adapter_for(deployment.kind).embed(deployment.target, route.body)

    try:
        attempt, result, _ = first_success(call, send)
    except AttemptsExhausted as exhausted:
        return call.fail_response(_as_gateway_error(exhausted.error))
    usage = result.usage
    estimated = usage is None
    if usage is None:
        usage = Usage(prompt_tokens=route.input_tokens()[0])
        result.body["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
    cost, spend = call.finish(status="ok", http_status=200, usage=usage, usage_estimated=estimated)
    headers = call.headers(attempt.deployment)
    headers["content-type"] = "application/json"
    _cost_headers(headers, cost, spend)
    return CompletionResult(status=200, headers=headers, body=orjson.dumps(result.body))
