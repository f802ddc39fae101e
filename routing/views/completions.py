"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI wire format.

The completion view is a DRF view kept lean: no parser negotiation (the body is read
once and parsed with orjson), no renderer (it returns a ready HttpResponse), no
throttles; authentication is the in-process key cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request, WrappedAttributeError
from rest_framework.views import APIView

from accounts.authentication import ClientKeyAuthentication, HasClientKey, client_key
from gatewaysite.api.errors import ModelNotFound, PayloadTooLarge
from gatewaysite.api.parsers import parse_json_body
from gatewaysite.api.responses import api_response, api_stream
from gatewaysite.clock import monotonic
from gatewaysite.middleware import request_id_of
from gatewaysite.offload import offload_cpu
from routing.config.cache import config_cache
from routing.services.completion import CompletionResult, run_completion
from routing.services.validation import validate_chat_body
from routing.strategies.base import RouteRequest


def read_body(request: Request) -> bytes:
    limit = settings.GATEWAY["MAX_BODY_BYTES"]
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    try:
        raw = request._request.body
    except RequestDataTooBig:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    return raw


# Bodies at least this large are parsed and validated on a native thread (``offload_cpu``):
# walking a 4 MB body of small messages takes long enough to stall the process's other requests.
OFFLOAD_BYTES = 256 * 1024


def read_json(request: Request, validate: Callable[[Any], Any] | None = None) -> Any:
    """The body parsed (and checked by ``validate``), on a native thread when it is large."""
    raw = read_body(request)

    def work(data: bytes) -> Any:
        parsed = parse_json_body(data)
        return validate(parsed) if validate is not None else parsed

    return offload_cpu(work, raw) if len(raw) >= OFFLOAD_BYTES else work(raw)


def route_request(request: Request) -> RouteRequest:
    """Parse and validate a chat completion body into what routing works with."""
    return chat_route(request, read_json(request, validate_chat_body))


_UNPREFIXED_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}

# environ key -> header name, "" for a key that is not a header; bounded, since clients choose
# their header names (past the bound a name is worked out on every request instead)
_HEADER_NAMES: dict[str, str] = {}
HEADER_NAMES_KEPT = 4096


def _header_name(key: str) -> str:
    if key.startswith("HTTP_"):
        name = key[5:].replace("_", "-").lower()
    else:
        name = _UNPREFIXED_HEADERS.get(key, "")
    if len(_HEADER_NAMES) < HEADER_NAMES_KEPT:
        _HEADER_NAMES[key] = name
    return name


def lowercase_headers(request: Request) -> dict[str, str]:
    """The request's headers by lower-case name: what ``request.headers`` holds, read from
    the WSGI environ in one pass (building Django's ``HttpHeaders`` and walking it through
    its case-insensitive mapping cost several times more on every request), each key's
    header name looked up rather than worked out again."""
    names = _HEADER_NAMES
    headers = {}
    for key, value in request._request.META.items():
        name = names.get(key)
        if name is None:
            name = _header_name(key)
        if name:
            headers[name] = value
    return headers


def chat_route(request: Request, body: dict[str, Any]) -> RouteRequest:
    """A validated chat body (``validate_chat_body``) into what routing works with."""
    return RouteRequest(
        model=body["model"],
        body=body,
        stream=bool(body.get("stream")),
        key=client_key(request),
        snapshot=config_cache.current(),
        headers=lowercase_headers(request),
    )


_JSON = JSONRenderer()


_NEGOTIATOR = DefaultContentNegotiation()  # stateless: one for every request


def _per_class(view: APIView, name: str, build: Callable[[], Any]) -> Any:
    """``build()``'s value, made once per view class (the class's own settings) and kept on it."""
    cls = type(view)
    value = cls.__dict__.get(name)
    if value is None:
        value = build()
        setattr(cls, name, value)
    return value


class ClientKeyView(APIView):
    """The key-authenticated API's DRF view: DRF's dispatch, without rebuilding per request
    what holds no state (the authenticators and permissions of the view class, the content
    negotiator, the ``Allow``/``Vary`` headers), and with its reference cycles (DRF request
    -> parser context -> request and view; the view's ``head`` alias of ``get``) broken when
    the view is done, so the request is freed at once rather than by a garbage collection
    (docs/benchmark.md)."""

    authentication_classes = [ClientKeyAuthentication]
    permission_classes = [HasClientKey]
    throttle_classes: list[Any] = []

    def get_authenticators(self) -> Any:
        return _per_class(self, "_authenticators", lambda: tuple(super(ClientKeyView, self).get_authenticators()))

    def get_permissions(self) -> Any:
        return _per_class(self, "_permissions", lambda: tuple(super(ClientKeyView, self).get_permissions()))

    def get_content_negotiator(self) -> Any:
        return _NEGOTIATOR

    def perform_authentication(self, request: Request) -> None:
        """DRF's ``request.user`` on a request not authenticated yet, without the ``hasattr``
        probe that raises two ``AttributeError``s on the way (DRF's ``Request.__getattr__``
        asks the Django request, which has no ``_user`` either), and with DRF's
        ``wrap_attributeerrors`` written out (a generator-based context manager per request)."""
        if "_user" in vars(request) or "_user" in vars(request._request):
            return  # what DRF's property would return as it is
        try:
            request._authenticate()  # type: ignore[attr-defined]  # DRF's own, untyped in the stubs
        except AttributeError as error:  # as wrap_attributeerrors: not taken for a missing attribute of the request
            raise WrappedAttributeError(str(error)).with_traceback(error.__traceback__)

    @property
    def default_response_headers(self) -> dict[str, str]:
        headers: dict[str, str] = _per_class(
            self, "_response_headers", lambda: super(ClientKeyView, self).default_response_headers
        )
        return dict(headers)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """Always JSON (errors included), whatever ``Accept`` says: streaming clients send
        ``Accept: text/event-stream`` and must get their stream, not a 406."""
        return _JSON, _JSON.media_type

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            drf_request = self.request
            if isinstance(drf_request, Request):
                drf_request.parser_context = None  # type: ignore[assignment]  # read only while parsing, by DRF's parsers
            self.request = None  # type: ignore[assignment]
            vars(self).pop("head", None)  # View.as_view's ``self.head = self.get``: a bound method of the view, on it


class ChatCompletionsView(ClientKeyView):
    parser_classes: list[Any] = []

    def post(self, request: Request) -> HttpResponseBase:
        received = monotonic()
        route = route_request(request)
        return result_response(run_completion(route, request_id=request_id_of(request._request), received=received))


def result_response(result: CompletionResult) -> HttpResponseBase:
    """The HTTP response of a routed call (chat, embeddings, messages): its stream or body, status, headers."""
    if result.stream is not None:
        return api_stream(result.stream, status=result.status, headers=result.headers)
    return api_response(result.body, status=result.status, headers=result.headers)


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "gateway"}


class ModelsView(ClientKeyView):
    def get(self, request: Request) -> HttpResponse:
        key = client_key(request)
        snapshot = config_cache.current()
        data = [_model_entry(m) for m in snapshot.models if key.may_use(m)]
        return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")


class ModelDetailView(ClientKeyView):
    def get(self, request: Request, model: str) -> HttpResponse:
        key = client_key(request)
        snapshot = config_cache.current()
        if model not in snapshot.models or not key.may_use(model):
            raise ModelNotFound(f"The model '{model}' does not exist or is not available.", param="model")
        return HttpResponse(orjson.dumps(_model_entry(model)), content_type="application/json")
