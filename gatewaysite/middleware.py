"""Request ids, the API fast path, and OpenAI-shaped errors for paths that never reach a view."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware

from gatewaysite.api.errors import error_response

# Paths of the key-authenticated API: no cookies, no sessions, no browser forms.
API_PREFIX = "/v1/"


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives every request an id (``request.request_id``) and every response ``x-request-id``.

    A client-supplied ``x-request-id`` is not trusted: ids are unique keys of usage
    records, so the gateway always makes its own.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["x-request-id"] = request_id
        return response


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(
        f"Unknown path {request.path}.", status_code=404, error_type="invalid_request_error", code="not_found"
    )


def api_server_error(request: HttpRequest) -> HttpResponse:
    return error_response(
        "The gateway failed to handle the request.", status_code=500, error_type="server_error", code="internal_error"
    )


class _BrowserOnly:
    """Skips the wrapped browser middleware on the API's paths (see ``API_PREFIX``).

    API clients authenticate with keys in a header and send no cookies, so sessions,
    the session user, messages and CSRF protection have nothing to do there; skipping
    them is measured in docs/benchmark.md. The security headers (SecurityMiddleware,
    XFrameOptionsMiddleware) still apply to every response.
    """

    get_response: Callable[[HttpRequest], HttpResponse]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class SessionMiddleware(_BrowserOnly, _SessionMiddleware):
    pass


class CsrfViewMiddleware(_BrowserOnly, _CsrfViewMiddleware):
    def process_view(self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any) -> Any:
        if request.path_info.startswith(API_PREFIX):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(_BrowserOnly, _AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, _MessageMiddleware):
    pass
