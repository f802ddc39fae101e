"""Request ids, request bodies, the API fast path, and OpenAI-shaped errors for paths that never reach a view."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware
from django.utils.deprecation import MiddlewareMixin

from gatewaysite.api.errors import error_response
from gatewaysite.offload import gevent_patched

logger = logging.getLogger(__name__)

# Paths of the key-authenticated API: no cookies, no sessions, no browser forms.
API_PREFIX = "/v1/"
# Paths whose every answer, errors included, is OpenAI-shaped JSON: the key-authenticated
# API, the JWT API, and the strategy switch (the rest of /admin/ is the HTML admin).
_JSON_PREFIXES = ("/v1/", "/api/")
_JSON_PATHS = ("/admin/routing/strategy",)


def is_api_path(path: str) -> bool:
    """Whether errors on ``path`` are answered as OpenAI-shaped JSON (``/V1/...`` too)."""
    lowered = path.lower()
    return lowered.startswith(_JSON_PREFIXES) or lowered.rstrip("/") in _JSON_PATHS


def new_request_id() -> str:
    """``req_`` and a random (version 4) UUID in hex, as ``uuid.uuid4().hex`` writes it.

    Built from the 16 random bytes directly: ``uuid.UUID``'s constructor checks its
    arguments in Python and cost several times the random bytes themselves, per request.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "req_" + raw.hex()


class RequestIdMiddleware:
    """Gives every request an id (``request.request_id``) and every response ``x-request-id``.

    A client-supplied ``x-request-id`` is not trusted: ids are unique keys of usage
    records, so the gateway always makes its own.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]  # the gateway's own attribute; read it with request_id_of
        response = self.get_response(request)
        response["x-request-id"] = request_id
        return response


def request_id_of(request: HttpRequest) -> str:
    """The id ``RequestIdMiddleware`` gave ``request``."""
    request_id: str = request.request_id  # type: ignore[attr-defined]  # set by RequestIdMiddleware, not Django's
    return request_id


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(
        f"Unknown path {request.path}.", status_code=404, error_type="invalid_request_error", code="not_found"
    )


def api_bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400s that never reach a view; the one a client meets is a ``Host`` header
    not in ``ALLOWED_HOSTS`` (``DisallowedHost``)."""
    from django.core.exceptions import DisallowedHost

    if isinstance(exception, DisallowedHost):
        return error_response(
            "The Host header names a host this gateway does not serve.",
            status_code=400,
            error_type="invalid_request_error",
            code="invalid_host",
        )
    return error_response(
        "The request could not be understood.", status_code=400, error_type="invalid_request_error", code="bad_request"
    )


def api_forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(
        "You may not do this.", status_code=403, error_type="permission_error", code="permission_denied"
    )


def api_server_error(request: HttpRequest) -> HttpResponse:
    return error_response(
        "The gateway failed to handle the request.", status_code=500, error_type="server_error", code="internal_error"
    )


class _BrowserOnly(MiddlewareMixin):
    """Skips the wrapped browser middleware on the API's paths (see ``API_PREFIX``).

    API clients authenticate with keys in a header and send no cookies, so sessions,
    the session user, messages and CSRF protection have nothing to do there; skipping
    them is measured in docs/benchmark.md. The security headers (SecurityMiddleware,
    XFrameOptionsMiddleware) still apply to every response.
    """

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)


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


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


def _read_body(stream: Any, limit: int, seconds: float, length: int | None = None) -> bytes:
    """All of ``stream`` (up to ``limit`` bytes), within ``seconds`` in total.

    ``length``: the announced ``Content-Length`` (the stream ends there): once that much is
    in, the body is complete, without one more read and one more turn to the other requests
    (most bodies come in one chunk: the turn was a trip through gevent's hub per request).

    The deadline needs gevent (gunicorn's gevent worker, the production server): a
    ``gevent.Timeout`` interrupts a read that waits on a silent client. Elsewhere (the
    development and test servers, one thread per request) the read is not timed.
    """
    chunks: list[bytes] = []
    size = 0
    timeout = None
    pause: Callable[[], Any] = lambda: None  # noqa: E731
    if gevent_patched():
        import gevent

        # A body already in the socket's buffer never makes a read wait, so the loop would
        # not yield to the process's other requests until the whole body is in: it yields
        # after every chunk instead (a 4 MB body took ~100 ms of the hub in one go).
        pause = gevent.sleep
        if seconds > 0:
            timeout = gevent.Timeout(seconds, BodyTimeout)
            timeout.start()
    try:
        while True:
            chunk = stream.read(min(64 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            if size == length:
                break
            pause()
    finally:
        if timeout is not None:
            timeout.close()
    return b"".join(chunks)


def _stop_reading(request: HttpRequest) -> None:
    """Make the server close the connection after this response instead of waiting for the
    rest of a body that will not come: under gunicorn, shut the socket's read side, so the
    server's drain of the unread body meets the end of input at once."""
    sock = request.META.get("gunicorn.socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # the client may be gone already
        sock.shutdown(socket.SHUT_RD)


class RequestBodyMiddleware:
    """Reads every request body up front, bounded in size and in time, for every view.

    - Size: ``GATEWAY_MAX_BODY_BYTES`` on the API paths, ``GATEWAY_MAX_ADMIN_BODY_BYTES``
      elsewhere (admin forms and price-list uploads); 413 past it, from the announced
      ``Content-Length`` before reading, or while reading a chunked body.
    - Time: ``GATEWAY_BODY_READ_SECONDS`` (30) for the whole body; a client that announces
      a length and stalls gets a 408 and the connection is closed.
    - ``Transfer-Encoding: chunked`` (no ``Content-Length``): Django reads only
      ``Content-Length`` bytes, so it would see an empty body; gunicorn decodes the chunks
      and marks its input ``wsgi.input_terminated``, so the body is read to its end here.

    The view then finds the body in ``request.body`` (and DRF in ``request.data``) as
    usual. Errors on API paths are OpenAI-shaped JSON.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        length_header = meta.get("CONTENT_LENGTH") or ""
        chunked = not length_header and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and length_header in ("", "0"):
            return self.get_response(request)
        from django.conf import settings

        api = is_api_path(request.path)
        gateway = settings.GATEWAY
        limit = gateway["MAX_BODY_BYTES"] if api else gateway["MAX_ADMIN_BODY_BYTES"]
        if chunked:
            if not meta.get("wsgi.input_terminated"):
                return self.get_response(request)  # a server that does not decode chunks: nothing to read
            stream = meta["wsgi.input"]
        else:
            if not length_header.isdigit():
                return self._error(request, api, 400, "The Content-Length header is not a number.", "invalid_length")
            if int(length_header) > limit:
                return self._too_large(request, api, limit)
            stream = request._stream  # Django's LimitedStream over the input
        length = None if chunked else int(length_header)
        # a body the server already holds in memory is read without a deadline (no read waits)
        holds = getattr(meta.get("wsgi.input"), "holds", None)
        seconds = 0 if length is not None and holds is not None and holds(length) else gateway["BODY_READ_SECONDS"]
        try:
            body = _read_body(stream, limit, seconds, length)
        except BodyTooLarge:
            return self._too_large(request, api, limit)
        except BodyTimeout:
            return self._timed_out(request, api, gateway["BODY_READ_SECONDS"])
        except Exception as exc:  # noqa: BLE001 - the server's reader raises its own errors (a malformed chunk, a client gone mid-body)
            _stop_reading(request)
            logger.info("request body unreadable (%s): %s", type(exc).__name__, request.path)
            return self._error(request, api, 400, "The request body could not be read.", "invalid_body")
        request._body = body
        request._stream = io.BytesIO(body)
        meta["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)

    def _timed_out(self, request: HttpRequest, api: bool, seconds: float) -> HttpResponse:
        _stop_reading(request)
        logger.info("request body not received within %s s: %s", seconds, request.path)
        message = f"The request body was not received within {seconds:g} s."
        return self._error(request, api, 408, message, "request_timeout")

    def _too_large(self, request: HttpRequest, api: bool, limit: int) -> HttpResponse:
        return self._error(request, api, 413, f"The request body is larger than {limit} bytes.", "request_too_large")

    @staticmethod
    def _error(request: HttpRequest, api: bool, status: int, message: str, code: str) -> HttpResponse:
        if api:
            response = error_response(message, status_code=status, error_type="invalid_request_error", code=code)
        else:
            response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
        response["Content-Length"] = str(len(response.content))  # answered before CommonMiddleware sets it
        return response
