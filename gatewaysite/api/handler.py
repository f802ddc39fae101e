"""The WSGI application: Django's handler, with a shorter road to the key-authenticated API.

Every request goes through Django's ``WSGIHandler`` as usual, except those whose path is
exactly one of the API's fixed paths under ``/v1/`` (``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/messages``, ``/v1/models``, ...; not ``/v1/admin/``, and not a
path with a parameter). For those the handler already knows the view, and it runs only
the middleware that do something there:

- The same view (the DRF view of the URLconf, ``csrf_exempt`` as Django calls it) and
  the same middleware classes, in ``settings.MIDDLEWARE``'s order, each wrapped as
  Django wraps it (``convert_exception_to_response``), so an exception anywhere becomes
  the same OpenAI-shaped error with the same headers. Consecutive plain
  ``MiddlewareMixin`` middleware (Django's security, common and clickjacking middleware)
  run as one layer, ``MixinRun``, with the same hooks, order and exception outcome.
- Left out: the middleware listed in ``NOT_ON_THE_API``, which pass these paths through
  untouched (sessions, CSRF, the session user, messages and the configuration
  propagation wait skip ``/v1/`` outside ``/v1/admin/``; WhiteNoise serves only
  ``STATIC_URL``). A middleware added to ``settings.MIDDLEWARE`` later is run here too.
- Left out of Django's per-request work: URL resolution (the match is made once, at
  start), ``set_urlconf`` (there is one URLconf), the view middleware pass (only CSRF has
  one, and it exempts ``/v1/``), and ``ATOMIC_REQUESTS`` (this road is closed when a
  database sets it).
- The request signals' work without the signals (``RequestHousekeeping``): database
  connections checked and closed, and every other receiver called, at the start and the
  end of the request, while the receivers are the ones it was built with.
- Kept: the rest of what ``WSGIHandler.__call__`` does around ``get_response`` (the
  script prefix, the request object, the status line, headers and cookies), and Django's
  log line for responses of 400 and above.

Measured in docs/benchmark.md ("Where the time goes"): Django's handler, URL resolution
and the pass-through middleware were about a fifth of a completion's CPU.
``GATEWAY_API_FAST_PATH=0`` sends these paths through Django's whole handler too (the
same answers; tests/test_api_fast_path.py compares both roads).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.cache import caches, close_caches
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.base import reset_urlconf
from django.core.handlers.exception import convert_exception_to_response, response_for_exception
from django.core.handlers.wsgi import WSGIHandler, get_script_name
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, URLPattern, URLResolver, get_resolver, set_script_prefix
from django.urls.resolvers import RoutePattern
from django.utils.deprecation import MiddlewareMixin
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


def _plain_mixin(factory: object) -> bool:
    """A ``MiddlewareMixin`` class that only has the request and response hooks (its ``__call__`` is the mixin's)."""
    return (
        isinstance(factory, type)
        and issubclass(factory, MiddlewareMixin)
        and factory.__call__ is MiddlewareMixin.__call__
    )


class MixinRun:
    """Consecutive ``MiddlewareMixin`` middleware (Django's security, common and clickjacking
    middleware on the API) as one layer around ``inner``: the same hooks in the same order,
    with the same outcome as Django's chain of one ``MiddlewareMixin.__call__`` per middleware,
    each in ``convert_exception_to_response``:

    - ``process_request`` in order; the first answer stops there, and the middleware that
      answered still gets ``process_response``;
    - an exception in a hook becomes ``response_for_exception``'s answer, as the wrapper of
      that middleware makes it; the middleware that raised gets no ``process_response``
      (its ``__call__`` was cut short), the ones outside it do;
    - ``process_response`` in reverse order.

    One frame instead of two per middleware (measured in docs/benchmark.md).
    """

    def __init__(self, middleware: list[MiddlewareMixin], inner: Handler) -> None:
        self.inner = inner
        self.requests = [getattr(m, "process_request", None) for m in middleware]
        self.responses = [getattr(m, "process_response", None) for m in middleware]

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        ran = len(self.requests)  # how many middleware get their process_response
        for index, hook in enumerate(self.requests):
            if hook is None:
                continue
            try:
                response = hook(request)
            except Exception as exc:  # noqa: BLE001 - as convert_exception_to_response
                response = response_for_exception(request, exc)
                ran = index
                break
            if response is not None:
                ran = index + 1
                break
        else:
            response = self.inner(request)
        responses = self.responses
        for index in range(ran - 1, -1, -1):
            hook = responses[index]
            if hook is None:
                continue
            try:
                response = hook(request, response)
            except Exception as exc:  # noqa: BLE001 - as convert_exception_to_response
                response = response_for_exception(request, exc)
        return response


def api_chain(middleware: Iterable[str]) -> Handler:
    """``middleware`` (settings.MIDDLEWARE's dotted paths) around ``_call_view``, built as
    ``BaseHandler.load_middleware`` builds Django's chain, without the ones in ``NOT_ON_THE_API``;
    consecutive plain ``MiddlewareMixin`` middleware run as one ``MixinRun``."""
    handler: Handler = convert_exception_to_response(_call_view)
    run: list[MiddlewareMixin] = []  # innermost first while building outwards

    def close_run(handler: Handler) -> Handler:
        if not run:
            return handler
        layer = MixinRun(list(reversed(run)), handler)
        run.clear()
        return convert_exception_to_response(layer)

    for path in reversed(list(middleware)):
        if path in NOT_ON_THE_API:
            continue
        factory = import_string(path)
        if _plain_mixin(factory):
            with contextlib.suppress(MiddlewareNotUsed):
                run.append(factory(handler))  # its get_response is unused: MixinRun calls the inner handler
            continue
        handler = close_run(handler)
        try:
            instance = factory(handler)
        except MiddlewareNotUsed:
            continue
        handler = convert_exception_to_response(instance)
    return close_run(handler)


def fast_path_enabled() -> bool:
    return settings.GATEWAY["API_FAST_PATH"] and not any(
        db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values()
    )


class RequestHousekeeping:
    """What the ``request_started`` and ``request_finished`` receivers do, for the API's road,
    without sending the signals.

    Django's own receivers (``reset_queries`` and ``close_old_connections`` at the start;
    ``close_old_connections``, ``close_caches`` and ``reset_urlconf`` at the end) each look
    the connections up again through asgiref's ``Local``, and ``Signal.send`` walks its
    weak references on every call: about 23 µs a request, 4-6% of a completion's CPU
    (docs/benchmark.md). Here the same work is one pass over the initialized database
    connections at each end; caches are closed only when a configured backend has a
    ``close`` (none of the gateway's does); the URLconf needs no reset (the API's road never
    sets one). Any other receiver is called as ``Signal.send`` calls it, in its order.

    It applies only while both signals have exactly the receivers it was built with: a
    receiver connected or disconnected later sends the API's requests through the signals.
    """

    DJANGO_STARTED = (reset_queries, close_old_connections)
    DJANGO_FINISHED = (close_old_connections, close_caches, reset_urlconf)

    def __init__(self) -> None:
        self.started_list = list(request_started.receivers)
        self.finished_list = list(request_finished.receivers)
        self.other_started = [r for r in _receivers(self.started_list) if r not in self.DJANGO_STARTED]
        self.other_finished = [r for r in _receivers(self.finished_list) if r not in self.DJANGO_FINISHED]
        self.closes_caches = any(
            import_string(options["BACKEND"]).close is not BaseCache.close for options in settings.CACHES.values()
        )

    def applies(self) -> bool:
        # list == compares the receiver tuples by identity first: well under a microsecond
        return request_started.receivers == self.started_list and request_finished.receivers == self.finished_list

    def start(self, sender: type, environ: dict[str, Any]) -> None:
        for conn in initialized_connections():
            conn.queries_log.clear()
            conn.close_if_unusable_or_obsolete()
        for receiver in self.other_started:
            receiver(signal=request_started, sender=sender, environ=environ)

    def finish(self, sender: type) -> None:
        for conn in initialized_connections():
            conn.close_if_unusable_or_obsolete()
        if self.closes_caches:
            caches.close_all()
        for receiver in self.other_finished:
            receiver(signal=request_finished, sender=sender)


def _connection_storage() -> Any:
    """The thread-local storage behind ``connections`` (asgiref's thread-critical ``Local``
    keeps it in ``_storage`` and uses it whenever no asyncio loop runs), or None when
    asgiref keeps it some other way."""
    local = connections._connections  # type: ignore[attr-defined]  # Django's own, untyped in the stubs
    if type(local).__name__ != "_ThreadCriticalLocal":
        return None
    try:
        storage = object.__getattribute__(local, "_storage")
    except AttributeError:
        return None
    return storage if hasattr(storage, "__dict__") else None


_CONNECTION_STORAGE = _connection_storage()


def initialized_connections() -> Sequence[BaseDatabaseWrapper]:
    """``connections.all(initialized_only=True)``: the same connections in the same order.

    Django asks asgiref's ``Local`` ``hasattr`` per alias, which, outside an asyncio loop,
    raises and catches a ``RuntimeError`` (no running loop) and an ``AttributeError`` (no
    connection yet) each time: about 2 µs a check, two checks a request. Outside a loop
    that ``Local`` reads a plain thread-local (under gevent, per greenlet), which is read
    here directly; anywhere else Django's own call answers (tests/test_api_fast_path.py
    holds both to the same answer).
    """
    storage = _CONNECTION_STORAGE
    if storage is None or asyncio._get_running_loop() is not None:
        return connections.all(initialized_only=True)
    made = storage.__dict__
    if not made:
        return []
    return [made[alias] for alias in connections.settings if alias in made]


def _receivers(entries: list[Any]) -> list[Callable[..., Any]]:
    """The receiver functions of a ``Signal.receivers`` list (weak references resolved)."""
    found = []
    for entry in entries:
        receiver = entry[1]
        if isinstance(receiver, weakref.ReferenceType):
            receiver = receiver()
        if receiver is not None:
            found.append(receiver)
    return found


class _ApiClose:
    """``HttpResponseBase.close`` for the API's road: the response's closers, then the
    housekeeping in place of ``request_finished``."""

    __slots__ = ("response", "housekeeping", "sender")

    def __init__(self, response: HttpResponseBase, housekeeping: RequestHousekeeping, sender: type) -> None:
        self.response = response
        self.housekeeping = housekeeping
        self.sender = sender

    def __call__(self) -> None:
        response = self.response
        for closer in response._resource_closers:  # type: ignore[attr-defined]  # Django's own
            with contextlib.suppress(Exception):  # as HttpResponseBase.close
                closer()
        response._resource_closers.clear()  # type: ignore[attr-defined]
        response.closed = True
        del response.close  # the response held this object, which held it: no cycle left for the collector
        self.housekeeping.finish(self.sender)


class GatewayWSGIHandler(WSGIHandler):
    """``WSGIHandler``; the API's paths take the short road (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.api_routes = api_routes() if fast_path_enabled() else {}
        self.api_chain: Handler = api_chain(settings.MIDDLEWARE) if self.api_routes else _call_view
        self.housekeeping = RequestHousekeeping()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # PATH_INFO is what request.path_info holds for the API's (ASCII) paths
        match = self.api_routes.get(environ.get("PATH_INFO", ""))
        if match is None or not self.housekeeping.applies():
            return super().__call__(environ, start_response)
        # WSGIHandler.__call__ with the housekeeping in place of the request signals
        set_script_prefix(get_script_name(environ))
        self.housekeeping.start(self.__class__, environ)
        request = self.request_class(environ)
        response = self.api_response(request, match)
        response._handler_class = self.__class__  # type: ignore[attr-defined]  # Django's own
        response.close = _ApiClose(response, self.housekeeping, self.__class__)  # type: ignore[method-assign]
        status = f"{response.status_code} {response.reason_phrase}"
        headers = list(response.items())
        if response.cookies:
            headers.extend(("Set-Cookie", c.output(header="")) for c in response.cookies.values())
        start_response(status, headers)
        return response  # the API's views answer no files: no file wrapper

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        match = self.api_routes.get(request.path_info)
        if match is None:
            return super().get_response(request)
        return self.api_response(request, match)

    def api_response(self, request: HttpRequest, match: ResolverMatch) -> HttpResponseBase:
        # BaseHandler.get_response without set_urlconf (one URLconf) and URL resolution (done at start)
        request.resolver_match = match
        response: HttpResponse = self.api_chain(request)  # a streaming one too: typed as Django's own handler has it
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]  # Django's own, untyped in the stubs
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response
