"""The API's short road through the WSGI handler (gatewaysite/api/handler.py) answers as
Django's whole handler does.

Two production servers on the same database, Redis and loopback upstream: one with the
short road (the default), one with ``GATEWAY_API_FAST_PATH=0``. Every request below goes
to both; status, header names, the values that do not vary per request, and the body
(with the per-request ids left out) must be the same.
"""

from __future__ import annotations

import gc
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import request_finished
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.test import RequestFactory
from django.utils.deprecation import MiddlewareMixin
from django.views import View
from rest_framework.request import Request as DRFRequest

from gatewaysite.api.handler import NOT_ON_THE_API, GatewayWSGIHandler, MixinRun, _ApiClose, api_chain, api_routes
from tests.procs import LiveGateway, start_gateway
from tests.raw_http import parse_response, raw_exchange

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o"
HELLO = [{"role": "user", "content": "Hello"}]
# Headers whose value is the request's own (ids, timing) or the second's.
VARYING = {
    "date",
    "x-gateway-key-spend-usd",
    "x-request-id",
    "x-gateway-latency-ms",
    "x-gateway-upstream-latency-ms",
    "x-gateway-overhead-ms",
}
# Fields of a JSON body that are the request's own.
VARYING_FIELDS = {"id", "created", "request_id"}
# Answers that show the serving process's own state (live latency, health): status and header names only.
PROCESS_STATE = {"/v1/routing/explain"}


@pytest.fixture
def routed(fake_openai: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any) -> dict:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, MODEL, max_output_tokens=16_384)
    make_price("openai", MODEL, "2.50", "10.00")
    return {
        "plain": issue_key(name="plain")[1],
        "budgeted": issue_key(name="budgeted", budget_usd=Decimal("0.000001"), budget_period="day")[1],
    }


@pytest.fixture
def gateways(tmp_path: Path, routed: dict, redis_client: Any) -> Iterator[tuple[LiveGateway, LiveGateway]]:
    common = {"GATEWAY_MAX_BODY_BYTES": str(64 * 1024), "GATEWAY_SEED_PRICING": "0"}
    short = start_gateway(tmp_path, workers=1, clean=True, access_log=None, **common)
    long = start_gateway(tmp_path, workers=1, clean=True, access_log=None, GATEWAY_API_FAST_PATH="0", **common)
    try:
        yield short.wait_healthy(), long.wait_healthy()
    finally:
        short.stop()
        long.stop()


def _without(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without(v) for k, v in value.items() if k not in VARYING_FIELDS}
    if isinstance(value, list):
        return [_without(v) for v in value]
    return value


def _body(content: bytes) -> Any:
    try:
        return _without(orjson.loads(content))
    except orjson.JSONDecodeError:
        events = [line[6:] for line in content.split(b"\n") if line.startswith(b"data: ")]
        if events:
            return [_without(orjson.loads(e)) if e != b"[DONE]" else "[DONE]" for e in events]
        return content


def _answer(response: requests.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return (
        response.status_code,
        {k: (v if k not in VARYING else "") for k, v in headers.items()},
        _body(response.content),
    )


def test_both_roads_answer_alike(gateways: tuple[LiveGateway, LiveGateway], routed: dict) -> None:
    plain = {"Authorization": f"Bearer {routed['plain']}"}
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("POST", "/v1/chat/completions", plain, json.dumps({"model": MODEL, "messages": HELLO}).encode()),
        (
            "POST",
            "/v1/chat/completions",
            plain,
            json.dumps({"model": MODEL, "messages": HELLO, "stream": True}).encode(),
        ),
        ("POST", "/v1/chat/completions", plain, json.dumps({"model": "nope", "messages": HELLO}).encode()),
        ("POST", "/v1/chat/completions", plain, json.dumps({"model": MODEL, "messages": 5}).encode()),
        ("POST", "/v1/chat/completions", plain, b"{not json"),
        ("POST", "/v1/chat/completions", plain, b"x" * (65 * 1024)),
        ("POST", "/v1/chat/completions", {}, json.dumps({"model": MODEL, "messages": HELLO}).encode()),
        ("POST", "/v1/chat/completions", {"Authorization": "Bearer sk-gw-nope"}, b"{}"),
        (
            "POST",
            "/v1/chat/completions",
            {"Authorization": f"Bearer {routed['budgeted']}"},
            json.dumps({"model": MODEL, "messages": HELLO}).encode(),
        ),
        ("GET", "/v1/chat/completions", plain, None),
        ("HEAD", "/v1/chat/completions", plain, None),
        ("GET", "/v1/models", plain, None),
        ("HEAD", "/v1/models", plain, None),
        ("POST", "/v1/models", plain, b"{}"),
        ("POST", "/v1/routing/estimate-cost", plain, json.dumps({"model": MODEL, "messages": HELLO}).encode()),
        ("POST", "/v1/routing/explain", plain, json.dumps({"model": MODEL, "messages": HELLO}).encode()),
        ("GET", "/v1/reports/costs", plain, None),  # a client key on a staff endpoint
        ("GET", "/v1/models", {**plain, "Host": "evil.example"}, None),
        ("POST", "/v1/chat/completions", {**plain, "Host": "evil.example"}, b"{}"),
    ]
    short, long = gateways
    for method, path, headers, body in cases:
        answers = [
            _answer(requests.request(method, g.url + path, headers=headers, data=body, timeout=30))
            for g in (short, long)
        ]
        if path in PROCESS_STATE:
            assert [(a[0], sorted(a[1])) for a in answers[:1]] == [(a[0], sorted(a[1])) for a in answers[1:]], path
        else:
            assert answers[0] == answers[1], (method, path, answers)
        # the answer never varies with Accept (always JSON): no Vary header telling caches it does
        assert "vary" not in answers[0][1], (method, path)
        if answers[0][0] == 200:  # SecurityMiddleware and XFrameOptionsMiddleware ran on both
            assert answers[0][1]["x-content-type-options"] == "nosniff" and answers[0][1]["x-frame-options"] == "DENY"


def test_a_chunked_body_and_a_stalled_one(gateways: tuple[LiveGateway, LiveGateway], routed: dict) -> None:
    body = json.dumps({"model": MODEL, "messages": HELLO}).encode()
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        + f"Authorization: Bearer {routed['plain']}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    statuses = [parse_response(raw_exchange(g.port, chunked))[0] for g in gateways]
    assert statuses == [200, 200]


def test_the_short_road_covers_the_fixed_api_paths_only(settings: Any) -> None:
    routes = api_routes()
    assert "/v1/chat/completions" in routes and "/v1/models" in routes and "/v1/messages" in routes
    assert not any(path.startswith("/v1/admin/") for path in routes)  # configuration writes wait for propagation
    assert all(path.startswith("/v1/") for path in routes)
    assert "/admin/routing/strategy" not in routes
    # every middleware it leaves out is one settings.MIDDLEWARE has (a renamed one would run twice or never)
    assert set(settings.MIDDLEWARE) >= NOT_ON_THE_API
    assert callable(api_chain(settings.MIDDLEWARE))


class _ResponseHooks(MiddlewareMixin):
    """A middleware with a response hook only (as XFrameOptionsMiddleware), logging its calls."""

    log: list[str]
    name = ""
    raise_in_response = False

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        self.log.append(f"{self.name}.response")
        if self.raise_in_response:
            raise SuspiciousOperation(self.name)
        response[f"x-{self.name}"] = "seen"
        return response


class _Hooks(_ResponseHooks):
    """Both hooks; the request hook answers or raises when the scenario says so."""

    answer_in_request = False
    raise_in_request = False

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        self.log.append(f"{self.name}.request")
        if self.raise_in_request:
            raise PermissionDenied(self.name)
        return HttpResponse(f"from {self.name}", status=299) if self.answer_in_request else None


def _middleware(log: list[str], behaviour: dict[str, bool]) -> list[type[MiddlewareMixin]]:
    """Middleware a, b (response hook only), c, outermost first; ``behaviour`` as ``{"a_raise_in_request": True}``."""
    classes: list[type[MiddlewareMixin]] = []
    for name, base in (("a", _Hooks), ("b", _ResponseHooks), ("c", _Hooks)):
        attrs: dict[str, Any] = {"log": log, "name": name}
        for key, value in behaviour.items():
            owner, _, attr = key.partition("_")
            if owner == name:
                attrs[attr] = value
        classes.append(type(f"M{name}", (base,), attrs))
    return classes


@pytest.mark.parametrize(
    "behaviour",
    [
        {},
        {"a_answer_in_request": True},
        {"c_answer_in_request": True},
        {"a_raise_in_request": True},
        {"c_raise_in_request": True},
        {"b_raise_in_response": True},
        {"a_raise_in_response": True, "c_raise_in_response": True},
        {"c_answer_in_request": True, "b_raise_in_response": True},
        {"view_raises": True},
    ],
)
def test_a_run_of_mixins_answers_as_djangos_own_chain(behaviour: dict[str, bool]) -> None:
    """``MixinRun`` against Django's chain (one ``MiddlewareMixin.__call__`` per middleware, each
    in ``convert_exception_to_response``) on the same middleware: the same hooks run in the same
    order and the answer is the same, when a hook answers, raises, or the view raises."""
    view_raises = behaviour.pop("view_raises", False)

    def view(request: HttpRequest) -> HttpResponse:
        if view_raises:
            raise PermissionDenied("view")
        return HttpResponse("from the view")

    outcomes = []
    for build in ("django", "run"):
        log: list[str] = []
        classes = _middleware(log, behaviour)
        inner: Any = convert_exception_to_response(view)
        if build == "django":
            handler = inner
            for cls in reversed(classes):
                handler = convert_exception_to_response(cls(handler))
        else:
            handler = convert_exception_to_response(MixinRun([cls(inner) for cls in classes], inner))
        response = handler(RequestFactory().get("/v1/models"))
        outcomes.append((log, response.status_code, sorted(k for k in response.headers if k.startswith("x-"))))
    assert outcomes[0] == outcomes[1]


def _environ(path: str, key: str = "sk-gw-none") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
    }


def _serve(handler: GatewayWSGIHandler, path: str, key: str = "sk-gw-none") -> tuple[str, bytes]:
    statuses = []
    response = handler(_environ(path, key), lambda status, headers: statuses.append(status))
    body = b"".join(response)
    response.close()
    return statuses[0], body


def test_the_housekeeping_does_what_the_request_signals_do(routed: dict) -> None:
    """Database connections opened by an API request are closed at its end (CONN_MAX_AGE 0)
    and the request's log context is cleared, as the signals' receivers do on the long road."""
    from monitoring.context import current_request

    handler = GatewayWSGIHandler()
    assert handler.housekeeping.applies()
    connections["default"].close()
    status, _ = _serve(handler, "/v1/models", routed["plain"])
    assert status.startswith("200")
    assert connections["default"].connection is None  # opened for the key, closed at the end
    assert current_request.get() is None


def test_a_receiver_connected_later_is_sent_the_signal() -> None:
    handler = GatewayWSGIHandler()
    seen: list[type] = []

    def receiver(sender: type, **kwargs: Any) -> None:
        seen.append(sender)

    request_finished.connect(receiver, weak=False)
    try:
        assert not handler.housekeeping.applies()
        _serve(handler, "/v1/models")
    finally:
        request_finished.disconnect(receiver)
    assert seen == [GatewayWSGIHandler]
    assert handler.housekeeping.applies()  # back to the receivers it was built with


def test_an_api_request_leaves_no_garbage_for_the_collector(routed: dict) -> None:
    """The DRF view's request/view cycle and the road's close are broken when the request
    ends: every object of the request is freed by its reference count, none waits for a
    collection (gatewaysite/gunicorn.conf.py times full collections on this).

    ``gc.garbage`` is the process's: what other threads of the test process drop meanwhile
    (a finished thread's database connections, say) lands there too, so the request's own
    objects are looked for: a view, a request, a response, the road's close. Before the
    cycles were broken each request left its view, both requests and its response there.
    """
    handler = GatewayWSGIHandler()
    _serve(handler, "/v1/models", routed["plain"])  # warm: the key cache, the per-class objects
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            status, _ = _serve(handler, "/v1/models", routed["plain"])
            assert status.startswith("200")
        gc.collect()
        request_objects = (View, HttpRequest, DRFRequest, HttpResponseBase, _ApiClose)
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, request_objects)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def test_initialized_connections_answers_as_django(routed: dict) -> None:
    """The housekeeping's read of the opened connections gives Django's answer: none, one
    opened here, in another thread, in a greenlet (gevent's thread-local), in an asyncio loop."""
    import asyncio
    import threading

    import gevent

    from gatewaysite.api.handler import _CONNECTION_STORAGE, initialized_connections

    assert _CONNECTION_STORAGE is not None  # the fast read applies with the pinned asgiref

    def both() -> tuple[list[Any], list[Any]]:
        return initialized_connections(), connections.all(initialized_only=True)

    def check(opened: bool) -> None:
        fast, django_answer = both()
        assert fast == django_answer
        assert bool(fast) is opened

    def fresh() -> None:
        check(False)  # a new thread (or greenlet) has opened nothing
        connections["default"].ensure_connection()
        check(True)
        connections.close_all()

    connections.close_all()
    connections["default"].ensure_connection()
    check(True)
    thread = threading.Thread(target=fresh)
    thread.start()
    thread.join()
    gevent.spawn(fresh).join()

    async def in_a_loop() -> tuple[list[Any], list[Any]]:
        return both()

    fast, django_answer = asyncio.run(in_a_loop())
    assert fast == django_answer
