"""Errors in OpenAI's wire shape: ``{"error": {"message", "type", "code"}}``.

Every error the API returns, ours or DRF's, goes through ``openai_exception_handler`` or
``error_response`` so a client sees one shape whatever failed.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.http import HttpResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class GatewayError(exceptions.APIException):
    """Base of the gateway's own errors; ``error_type`` is OpenAI's ``error.type``."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid request."
    default_code = "invalid_request"
    error_type = "invalid_request_error"

    def __init__(
        self,
        detail: str | None = None,
        code: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail, code)
        self.param = param
        self.extra_headers = headers or {}

    @property
    def code(self) -> str:
        """The code given when raised, else the class default."""
        return str(getattr(self.detail, "code", None) or self.default_code)


class InvalidRequest(GatewayError):
    pass


class AuthenticationError(GatewayError):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Invalid API key."
    default_code = "invalid_api_key"
    error_type = "authentication_error"


class PermissionDenied(GatewayError):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "This key may not use this model."
    default_code = "model_not_allowed"
    error_type = "permission_error"


class NotFound(GatewayError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "Not found."
    default_code = "not_found"
    error_type = "invalid_request_error"


class ModelNotFound(NotFound):
    default_detail = "The model does not exist."
    default_code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Rate limit reached."
    default_code = "rate_limit_exceeded"
    error_type = "rate_limit_error"


class BudgetExceeded(RateLimited):
    default_detail = "Budget exceeded."
    default_code = "budget_exceeded"
    error_type = "insufficient_quota"


class BudgetUnavailable(GatewayError):
    """A budget applies but its shared counters cannot be reached, and it fails closed."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The budget of this key cannot be checked right now."
    default_code = "budget_unavailable"
    error_type = "api_error"


class UpstreamFailed(GatewayError):
    status_code: int = status.HTTP_502_BAD_GATEWAY
    default_detail = "The upstream provider failed."
    default_code = "upstream_error"
    error_type = "api_error"


class UpstreamTimeout(UpstreamFailed):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_detail = "The upstream provider timed out."
    default_code = "upstream_timeout"


_DRF_TYPES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.ParseError: ("invalid_request_error", "invalid_json"),
    exceptions.AuthenticationFailed: ("authentication_error", "invalid_authentication"),
    exceptions.NotAuthenticated: ("authentication_error", "missing_authentication"),
    exceptions.PermissionDenied: ("permission_error", "permission_denied"),
    exceptions.NotFound: ("invalid_request_error", "not_found"),
    exceptions.MethodNotAllowed: ("invalid_request_error", "method_not_allowed"),
    exceptions.NotAcceptable: ("invalid_request_error", "not_acceptable"),
    exceptions.UnsupportedMediaType: ("invalid_request_error", "unsupported_media_type"),
    exceptions.Throttled: ("rate_limit_error", "rate_limit_exceeded"),
    exceptions.ValidationError: ("invalid_request_error", "invalid_request"),
}


def error_body(message: str, *, error_type: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def error_response(
    message: str,
    *,
    status_code: int,
    error_type: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    response = HttpResponse(
        error_body(message, error_type=error_type, code=code, param=param),
        status=status_code,
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def gateway_error_response(exc: GatewayError) -> HttpResponse:
    return error_response(
        str(exc.detail),
        status_code=exc.status_code,
        error_type=exc.error_type,
        code=exc.code,
        param=exc.param,
        headers=exc.extra_headers,
    )


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = [f"{key}: {_flatten(value)}" for key, value in detail.items()]
        return "; ".join(parts)
    if isinstance(detail, list):
        return "; ".join(_flatten(item) for item in detail)
    return str(detail)


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    if isinstance(exc, GatewayError):
        return gateway_error_response(exc)
    response = exception_handler(exc, context)
    if response is None:
        # Unexpected: log with the traceback but tell the client only what is safe.
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return error_response(
            "The gateway failed to handle the request.",
            status_code=500,
            error_type="server_error",
            code="internal_error",
        )
    error_type, code = "invalid_request_error", "invalid_request"
    for klass, pair in _DRF_TYPES.items():
        if isinstance(exc, klass):
            error_type, code = pair
            break
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        if isinstance(detail, dict) and "detail" in detail and len(detail) <= 3:
            message = str(detail["detail"])
        else:
            message = _flatten(detail)
    else:
        message = str(exc)
    headers = {k: v for k, v in response.items() if k.lower() in ("www-authenticate", "retry-after", "allow")}
    return error_response(message, status_code=response.status_code, error_type=error_type, code=code, headers=headers)
