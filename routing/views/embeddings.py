"""``POST /v1/embeddings``: OpenAI's embeddings API through the gateway's routing and billing."""

from __future__ import annotations

from typing import Any

from django.http.response import HttpResponseBase
from rest_framework.request import Request

from accounts.authentication import client_key
from gatewaysite.clock import monotonic
from gatewaysite.middleware import request_id_of
from routing.config.cache import config_cache
from routing.services.embeddings import run_embeddings, validate_embeddings_body
from routing.services.validation import validate_chat_body
from routing.strategies.base import RouteRequest
from routing.views.completions import ClientKeyView, chat_route, lowercase_headers, read_json, result_response


def embeddings_route(request: Request, body: dict[str, Any]) -> RouteRequest:
    """A validated embeddings body (``validate_embeddings_body``) into what routing works with."""
    return RouteRequest(
        model=body["model"],
        body=body,
        stream=False,
        key=client_key(request),
        snapshot=config_cache.current(),
        headers=lowercase_headers(request),
        endpoint="embeddings",
    )


def any_route(request: Request) -> RouteRequest:
    """A chat completion body, or an embeddings body (``input`` and no ``messages``): for
    ``/v1/routing/estimate-cost`` and ``/v1/routing/explain``."""
    endpoint, body = read_json(request, _validated_any)
    return embeddings_route(request, body) if endpoint == "embeddings" else chat_route(request, body)


def _validated_any(parsed: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(parsed, dict) and "input" in parsed and "messages" not in parsed:
        return "embeddings", validate_embeddings_body(parsed)
    return "chat", validate_chat_body(parsed)


class EmbeddingsView(ClientKeyView):
    parser_classes: list[Any] = []

    def post(self, request: Request) -> HttpResponseBase:
        received = monotonic()
        route = embeddings_route(request, read_json(request, validate_embeddings_body))
        return result_response(run_embeddings(route, request_id=request_id_of(request._request), received=received))
