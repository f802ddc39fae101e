"""One middleware for the request id in logs, the request log line and the HTTP metrics.

Placed right after ``RequestIdMiddleware``. Per request it sets the request context (a
context variable), and when the response is complete - for a stream, when its last byte
is sent or the client went away - it writes one log line: request id, method, path
(never the query string, headers or body), status, latency, the key's prefix, and for
completions the model, deployment, provider, strategy, attempts, tokens and cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from accounts.keycache import KeyInfo
from gatewaysite.clock import monotonic
from gatewaysite.middleware import request_id_of
from monitoring.context import RequestContext, current_request
from monitoring.recording import process_metrics

request_logger = logging.getLogger("gateway.request")

_RECORD_FIELDS = (
    "model",
    "deployment",
    "provider",
    "strategy",
    "stream",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "cost_usd",
)


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else "unmatched"


def _refusal_reason(response: HttpResponse) -> str | None:
    """A 429 the gateway decided itself (no upstream attempt): budget or rate limit."""
    if response.streaming or response.has_header("x-gateway-attempts"):
        return None
    try:
        error = orjson.loads(response.content).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return "rate_limit"
    text = f"{error.get('code') or ''} {error.get('type') or ''}"
    return "budget" if "budget" in text or "quota" in text else "rate_limit"


def clear_request_context(**kwargs: Any) -> None:
    """``request_finished`` receiver: the response was sent (or abandoned), lines after it are not the request's.

    Kept until then so that what Django logs after the middleware (``django.request``'s
    error lines) still carries the request id.
    """
    current_request.set(None)


class ObservabilityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.log_requests = settings.GATEWAY["REQUEST_LOG"]
        self.metrics = settings.GATEWAY["METRICS_ENABLED"]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = monotonic()
        context = RequestContext(request_id=request_id_of(request))
        current_request.set(context)
        response = self.get_response(request)
        status = response.status_code
        if self.metrics:
            process_metrics.http(_route(request), request.method or "", status, monotonic() - started)
            if status == 429:
                reason = _refusal_reason(response)
                if reason is not None:
                    process_metrics.refusal(reason)
        if isinstance(response, StreamingHttpResponse):
            response.streaming_content = self._until_sent(
                response.streaming_content, request, response, context, started
            )
        else:
            self._log(request, response, context, started)
        return response

    def _until_sent(
        self,
        content: Iterator[bytes],
        request: HttpRequest,
        response: HttpResponse,
        context: RequestContext,
        started: float,
    ) -> Iterator[bytes]:
        current_request.set(context)  # the server iterates the body after the middleware returned
        try:
            yield from content
        finally:
            self._log(request, response, context, started)

    def _log(self, request: HttpRequest, response: HttpResponse, context: RequestContext, started: float) -> None:
        if not self.log_requests or not request_logger.isEnabledFor(logging.INFO):
            return  # the line would be dropped: build nothing (the logger caches this answer)
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "latency_ms": round((monotonic() - started) * 1000, 3),
        }
        user = request.__dict__.get("user")  # never evaluates the admin's lazy session user
        if isinstance(user, KeyInfo):
            fields["key_prefix"] = user.prefix
        record = context.record
        if record is not None:
            for name in _RECORD_FIELDS:
                fields[name] = getattr(record, name)
            fields["outcome"] = record.status
        request_logger.info("%s %s %s", request.method, request.path, response.status_code, extra={"fields": fields})
