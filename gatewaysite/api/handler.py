"""The WSGI application: Django's handler, with a shorter road to the key-authenticated API.

Every request goes through Django's ``WSGIHandler`` as usual, except those whose path is
exactly one of the API's fixed paths under ``/v1/`` (``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/messages``, ``/v1/models``, ...; not ``/v1/admin/``, and not a
path with a parameter). For those the handler already knows the view, and it runs only
the middleware that do something there:

- The same view (the DRF view of the URLconf, ``csrf_exempt`` as Django calls it) and
  the same middleware classes, in ``settings.MIDDLEWARE``'s order, each wrapped as
  Django wraps it (``convert_exception_to_response``), so an exception anywhere becomes
  the same OpenAI-shaped error with the same headers.
- Left out: the middleware listed in ``NOT_ON_THE_API``, which pass these paths through
  untouched (sessions, CSRF, the session user, messages and the configuration
  propagation wait skip ``/v1/`` outside ``/v1/admin/``; WhiteNoise serves only
  ``STATIC_URL``). A middleware added to ``settings.MIDDLEWARE`` later is run here too.
- Left out of Django's per-request work: URL resolution (the match is made once, at
  start), ``set_urlconf`` (there is one URLconf), the view middleware pass (only CSRF has
  one, and it exempts ``/v1/``), and ``ATOMIC_REQUESTS`` (this road is closed when a
  database sets it).
- Kept: everything ``WSGIHandler.__call__`` does around ``get_response`` (the script
  prefix, ``request_started``, the request object, the status line, headers, cookies and
  file wrapper), ``request_finished`` after the response (database connections and caches
  are checked and closed as usual), Django's log line for responses of 400 and above.

Measured in docs/benchmark.md ("Where the time goes"): Django's handler, URL resolution
and the pass-through middleware were about a fifth of a completion's CPU.
``GATEWAY_API_FAST_PATH=0`` sends these paths through Django's whole handler too (the
same answers; tests/test_api_fast_path.py compares both roads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from django.utils.log import log_response
from django.utils.module_loading import import_string

from gatewaysite.config.middleware import ADMIN_API_PREFIX
from gatewaysite.middleware import API_PREFIX

# Middleware of settings.MIDDLEWARE that pass the API's paths through untouched (each says so
# where it is defined); the API's road leaves them out.
NOT_ON_THE_API = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",  # answers STATIC_URL only
        "gatewaysite.middleware.SessionMiddleware",  # _BrowserOnly: skips /v1/
        "gatewaysite.middleware.CsrfViewMiddleware",
        "gatewaysite.middleware.AuthenticationMiddleware",
        "gatewaysite.middleware.MessageMiddleware",
        "gatewaysite.config.middleware.ConfigPropagationMiddleware",  # skips /v1/ outside /v1/admin/
    }
)

# A middleware chain: Django types it as answering awaitables too; this one is sync only.
Handler = Callable[[HttpRequest], Any]


def api_routes() -> dict[str, ResolverMatch]:
    """The API's fixed paths (``/v1/...`` without a parameter, outside ``/v1/admin/``) and
    what Django's resolver answers for each, resolved once."""
    resolver = get_resolver()
    routes: dict[str, ResolverMatch] = {}
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver) or not isinstance(entry, URLPattern):
            continue
        pattern = entry.pattern
        if not isinstance(pattern, RoutePattern) or pattern.converters:
            continue
        path = "/" + str(pattern)
        if not path.startswith(API_PREFIX) or path.startswith(ADMIN_API_PREFIX):
            continue
        match = resolver.resolve(path)
        if match.func is entry.callback:  # the first pattern that answers the path is this one
            routes[path] = match
    return routes


def _call_view(request: HttpRequest) -> HttpResponseBase:
    match: ResolverMatch = request.resolver_match  # type: ignore[assignment]  # set by GatewayWSGIHandler before the chain
    response = match.func(request, *match.args, **match.kwargs)
    if response is None:  # as BaseHandler.check_response says it
        raise ValueError(f"The view {match._func_path} didn't return an HttpResponse object. It returned None instead.")
    return response


def api_chain(middleware: Iterable[str]) -> Handler:
    """``middleware`` (settings.MIDDLEWARE's dotted paths) around ``_call_view``, built as
    ``BaseHandler.load_middleware`` builds Django's chain, without the ones in ``NOT_ON_THE_API``."""
    handler: Handler = convert_exception_to_response(_call_view)
    for path in reversed(list(middleware)):
        if path in NOT_ON_THE_API:
            continue
        try:
            instance = import_string(path)(handler)
        except MiddlewareNotUsed:
            continue
        handler = convert_exception_to_response(instance)
    return handler


def fast_path_enabled() -> bool:
    return settings.GATEWAY["API_FAST_PATH"] and not any(
        db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values()
    )


class GatewayWSGIHandler(WSGIHandler):
    """``WSGIHandler`` (request object, ``request_started``, the status line, headers and
    file wrapper as Django writes them); only ``get_response`` takes the short road."""

    def __init__(self) -> None:
        super().__init__()
        self.api_routes = api_routes() if fast_path_enabled() else {}
        self.api_chain: Handler = api_chain(settings.MIDDLEWARE) if self.api_routes else _call_view

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        match = self.api_routes.get(request.path_info)
        if match is None:
            return super().get_response(request)
        # BaseHandler.get_response without set_urlconf (one URLconf) and URL resolution (done at start)
        request.resolver_match = match
        response: HttpResponse = self.api_chain(request)  # a streaming one too: typed as Django's own handler has it
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]  # Django's own, untyped in the stubs
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response
