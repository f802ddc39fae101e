"""Request ids and OpenAI-shaped errors for paths that never reach a view."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from gatewaysite.api.errors import error_response


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
