"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API.

Clients built on the anthropic SDK set ``base_url`` to the gateway and their gateway key
as the API key: it arrives as ``x-api-key`` (or ``Authorization: Bearer`` with
``auth_token``). Every error these views return is in Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``, with the gateway's error code in
the ``x-gateway-error-code`` header.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.request import Request

from accounts.authentication import ClientKeyAuthentication, client_key
from accounts.keycache import KeyInfo, bearer_token, key_cache
from gatewaysite.api.errors import openai_exception_handler
from gatewaysite.clock import monotonic
from gatewaysite.middleware import request_id_of
from providers.adapters import anthropic_inbound as inbound
from routing.config.cache import config_cache
from routing.services.messages import count_tokens, messages_request, run_messages, validate_messages_body
from routing.strategies.base import RouteRequest
from routing.views.completions import ClientKeyView, lowercase_headers, read_json, result_response


class AnthropicKeyAuthentication(ClientKeyAuthentication):
    """The gateway key as ``x-api-key`` (what the anthropic SDK sends), else as a bearer token."""

    def authenticate(self, request: Any) -> tuple[KeyInfo, str]:
        token = (request.META.get("HTTP_X_API_KEY") or "").strip()
        if not token:
            token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        return key_cache.authenticate(token), token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def anthropic_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """The gateway's usual error handling, answered in Anthropic's error shape."""
    response = openai_exception_handler(exc, context)
    if response is None:
        return None
    return anthropic_error(response)


def anthropic_error(response: HttpResponse) -> HttpResponse:
    try:
        error = orjson.loads(response.content).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    response.content = orjson.dumps(inbound.error_json(response.status_code, str(error.get("message") or "")))
    if error.get("code"):
        response["x-gateway-error-code"] = str(error["code"])
    return response


class AnthropicView(ClientKeyView):
    authentication_classes = [AnthropicKeyAuthentication]
    parser_classes: list[Any] = []

    def get_exception_handler(self) -> Any:
        return anthropic_exception_handler

    def route(self, request: Request, parsed: Any) -> tuple[RouteRequest, Any]:
        body = validate_messages_body(parsed)
        beta = request.headers.get("anthropic-beta") or None
        messages, translated = messages_request(body, beta=beta)
        route = RouteRequest(
            model=body["model"],
            body=translated,
            stream=bool(body.get("stream")),
            key=client_key(request),
            snapshot=config_cache.current(),
            headers=lowercase_headers(request),
            endpoint="messages",
        )
        return route, messages


class MessagesView(AnthropicView):
    def post(self, request: Request) -> HttpResponseBase:
        received = monotonic()
        route, messages = self.route(request, read_json(request))
        return result_response(
            run_messages(route, messages, request_id=request_id_of(request._request), received=received)
        )


class CountTokensView(AnthropicView):
    def post(self, request: Request) -> HttpResponse:
        parsed = read_json(request)
        if isinstance(parsed, dict) and "max_tokens" not in parsed:
            parsed["max_tokens"] = 1  # count_tokens takes no max_tokens; the count does not depend on it
        route, _ = self.route(request, parsed)
        return HttpResponse(orjson.dumps(count_tokens(route)), content_type="application/json")
