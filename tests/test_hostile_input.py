"""Bad input gets a clear 4xx in OpenAI's error shape, never a 500, against the production server.

Each test runs gunicorn (``gatewaysite/gunicorn.conf.py``, one gevent worker) on loopback
with the test database, and talks to it as a careless or hostile client would: raw
sockets for what HTTP libraries refuse to send (a chunked body, a body that never
arrives, an oversized request line).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import requests
from django.conf import settings

from tests.procs import LiveGateway, start_gateway
from tests.raw_http import parse_response, raw_exchange, read_until_closed

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o"
HELLO = [{"role": "user", "content": "Hello"}]
BODY_LIMIT = 64 * 1024


def assert_openai_error(response: requests.Response | tuple[int, dict[str, str], bytes], status: int) -> dict:
    if isinstance(response, requests.Response):
        code, headers, body = (
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )
    else:
        code, headers, body = response
    assert code == status, (code, body[:500])
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture
def routed(fake_openai: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any) -> dict:
    """``gpt-4o`` (tiktoken's ``o200k_base``) on the loopback OpenAI upstream, priced; a plain key,
    a budgeted key (its requests are tokenized for the reservation) and a ``cost``-strategy key."""
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, MODEL, max_output_tokens=16_384)  # budgets hold the output limit
    make_price("openai", MODEL, "2.50", "10.00")
    return {
        "plain": issue_key(name="plain")[1],
        "budgeted": issue_key(name="budgeted", budget_usd=Decimal("1000"), budget_period="day")[1],
        "cost": issue_key(name="cost", strategy="cost")[1],
        "fake": fake_openai,
    }


def one_worker_gateway(tmp_path: Path, **env: str) -> LiveGateway:
    """One gevent worker, the test's own environment left out, a short poll, no pricing seeded."""
    return start_gateway(
        tmp_path,
        workers=1,
        clean=True,
        access_log=None,
        args=("--graceful-timeout", "5"),
        GATEWAY_CONFIG_POLL_SECONDS="0.2",
        GATEWAY_SEED_PRICING="0",
        **env,
    )


@pytest.fixture
def gateway(tmp_path: Path, routed: dict, redis_client: Any) -> Iterator[LiveGateway]:
    server = one_worker_gateway(
        tmp_path, GATEWAY_MAX_BODY_BYTES=str(BODY_LIMIT), GATEWAY_BODY_READ_SECONDS="1"
    ).wait_healthy()
    try:
        yield server
    finally:
        server.stop()


def post(gateway: LiveGateway, path: str, secret: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(
        gateway.url + path, data=json.dumps(body), headers={"Authorization": f"Bearer {secret}"}, timeout=30, **kwargs
    )


# --- the chat body: every field the gateway reads ---------------------------------------------

WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": 5}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": True}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": "call"}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [5]}]}, "messages[0].tool_calls[0]"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 5}}]}]},
        "messages[0].tool_calls[0].function.name",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": "hi", "name": ["x"]}]}, "messages[0].name"),
    ({"messages": [{"role": 5, "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "hi", "tool_call_id": 5}]}, "messages[0].tool_call_id"),
    ({"messages": HELLO, "tools": 5}, "tools"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": 5}]}, "tools[0].function"),
    (
        {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "tools[0].function.parameters",
    ),
    ({"messages": HELLO, "tool_choice": 5}, "tool_choice"),
    ({"messages": HELLO, "max_tokens": "5"}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 10**30}, "max_tokens"),
    ({"messages": HELLO, "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": HELLO, "n": 0}, "n"),
    ({"messages": HELLO, "stream": "yes"}, "stream"),
    ({"messages": HELLO, "stream_options": []}, "stream_options"),
    ({"messages": HELLO, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"messages": HELLO, "stop": 5}, "stop"),
    ({"messages": HELLO, "stop": ["a", 5]}, "stop"),
    ({"messages": HELLO, "metadata": []}, "metadata"),
    ({"messages": HELLO, "response_format": "json"}, "response_format"),
    ({"messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"messages": HELLO, "user": 5}, "user"),
    ({"messages": HELLO, "modalities": [5]}, "modalities"),
]


def test_wrong_types_are_400_naming_the_field(gateway: LiveGateway, routed: dict) -> None:
    # estimate-cost and explain tokenize; completions tokenize for a budgeted key and for the cost strategy
    endpoints = [
        ("/v1/routing/estimate-cost", routed["plain"]),
        ("/v1/routing/explain", routed["plain"]),
        ("/v1/chat/completions", routed["budgeted"]),
        ("/v1/chat/completions", routed["cost"]),
    ]
    for fields, param in WRONG_TYPES:
        for path, secret in endpoints:
            response = post(gateway, path, secret, {"model": MODEL, **fields})
            error = assert_openai_error(response, 400)
            assert error["param"] == param, (path, fields, error)
            assert error["type"] == "invalid_request_error"
    assert routed["fake"].received == []  # none of it reached the provider

    # and a body with every field in OpenAI's shapes is served
    good = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}], "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "max_tokens": 20,
        "n": 1,
        "stop": ["\n"],
        "stream": False,
        "metadata": {"team": "a"},
        "temperature": 0.5,
    }
    for path, secret in endpoints:
        assert post(gateway, path, secret, good).status_code == 200, path


@pytest.fixture
def default_gateway(tmp_path: Path, routed: dict, redis_client: Any) -> Iterator[LiveGateway]:
    server = one_worker_gateway(tmp_path).wait_healthy()
    try:
        yield server
    finally:
        server.stop()


def test_pathological_text_through_every_tokenizing_endpoint(default_gateway: LiveGateway, routed: dict) -> None:
    """A million spaces or tabs: tiktoken's ``o200k_base`` raises ``ValueError`` on it encoded at
    once (tests/usage/test_tokens.py); the gateway counts it in pieces, or falls back."""
    for text in (" " * 1_000_000, "\t" * 1_000_000):
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        estimate = post(default_gateway, "/v1/routing/estimate-cost", routed["plain"], body)
        assert estimate.status_code == 200, estimate.text[:300]
        candidate = estimate.json()["candidates"][0]
        assert candidate["input_tokens"] > 0 and candidate["tokenizer"] in ("tiktoken/o200k_base", "approx-chars/4")
        assert post(default_gateway, "/v1/routing/explain", routed["plain"], body).status_code == 200
        for key in ("budgeted", "cost"):
            response = post(default_gateway, "/v1/chat/completions", routed[key], body)
            assert response.status_code == 200, (key, response.text[:300])


# --- request bodies: chunked, too large, stalled -------------------------------------------------


def chunked_request(path: str, secret: str, body: bytes, *, chunk: int = 1000) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return head + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


def test_chunked_bodies_are_read_with_the_same_limit(gateway: LiveGateway, routed: dict) -> None:
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello " * 500}]})
    status, headers, answer = parse_response(
        raw_exchange(gateway.port, chunked_request("/v1/routing/estimate-cost", routed["plain"], body))
    )
    assert status == 200, answer[:300]
    assert orjson.loads(answer)["candidates"][0]["input_tokens"] > 500

    status, _, answer = parse_response(
        raw_exchange(gateway.port, chunked_request("/v1/chat/completions", routed["plain"], body))
    )
    assert status == 200, answer[:300]
    assert orjson.loads(answer)["object"] == "chat.completion"
    assert routed["fake"].received[-1].body["messages"][0]["content"] == "Hello " * 500

    # past GATEWAY_MAX_BODY_BYTES: 413, chunked or announced
    big = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (BODY_LIMIT + 10)}]})
    error = assert_openai_error(
        parse_response(raw_exchange(gateway.port, chunked_request("/v1/chat/completions", routed["plain"], big))), 413
    )
    assert error["code"] == "request_too_large"
    response = requests.post(
        gateway.url + "/v1/chat/completions", data=big, headers={"Authorization": f"Bearer {routed['plain']}"}
    )
    assert assert_openai_error(response, 413)["code"] == "request_too_large"


def test_a_stalled_body_gets_408_and_the_connection_is_closed(gateway: LiveGateway, routed: dict) -> None:
    """GATEWAY_BODY_READ_SECONDS is 1 here. The socket timeout (20 s) is far below gunicorn's
    keep-alive (75 s): a server that kept the connection open after its answer fails the test."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {routed['plain']}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as stalled:
        stalled.sendall(head + b'{"model": "')
        # the worker serves others meanwhile
        models = requests.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {routed['plain']}"})
        assert models.status_code == 200
        error = assert_openai_error(parse_response(read_until_closed(stalled)), 408)
    assert error["code"] == "request_timeout"

    # a client that trickles its body a byte at a time is cut off the same way
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as trickle:
        trickle.sendall(head)
        started = time.monotonic()
        received = b""
        while time.monotonic() - started < 15:
            try:
                trickle.sendall(b" ")
            except OSError:
                break
            trickle.settimeout(0.2)
            try:
                received += trickle.recv(65536)
                if received.count(b"\r\n\r\n") and b"}" in received:
                    break
            except TimeoutError:
                continue
        trickle.settimeout(20)
        received += read_until_closed(trickle)
    assert assert_openai_error(parse_response(received), 408)["code"] == "request_timeout"
    assert post(gateway, "/v1/chat/completions", routed["plain"], {"model": MODEL, "messages": HELLO}).ok


# --- errors before any view: host, path, method, malformed HTTP -------------------------------


def test_errors_outside_views_are_openai_shaped(gateway: LiveGateway, routed: dict) -> None:
    auth = {"Authorization": f"Bearer {routed['plain']}"}
    for path in ("/v1/models", "/v1/chat/completions", "/api/token/", "/admin/routing/strategy"):
        response = requests.get(gateway.url + path, headers={**auth, "Host": "evil.example"})
        assert assert_openai_error(response, 400)["code"] == "invalid_host", path
    admin = requests.get(gateway.url + "/admin/login/", headers={"Host": "evil.example"})
    assert admin.status_code == 400 and not admin.headers["content-type"].startswith("application/json")

    for path in ("/V1/models", "/V1/chat/completions", "/v1/nope", "/v1/chat/completions/x", "/api/nope", "/API/x"):
        response = requests.post(gateway.url + path, headers=auth, data=b"{}")
        assert assert_openai_error(response, 404)["code"] == "not_found", path

    # HEAD: a GET endpoint answers as GET would, without the body (HTTP forbids one)
    get = requests.get(gateway.url + "/v1/models", headers=auth)
    head = requests.head(gateway.url + "/v1/models", headers=auth)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    # on a POST-only endpoint: 405, with Allow and the JSON content type of the error GET gets
    head = requests.head(gateway.url + "/v1/chat/completions", headers=auth)
    assert head.status_code == 405 and head.content == b""
    assert "POST" in head.headers["allow"] and head.headers["content-type"] == "application/json"
    get = requests.get(gateway.url + "/v1/chat/completions", headers=auth)
    assert assert_openai_error(get, 405)["code"] == "method_not_allowed" and "POST" in get.headers["allow"]

    # malformed HTTP is answered by gunicorn itself (a short HTML page, documented in
    # docs/configuration.md), with the limits set in gatewaysite/gunicorn.conf.py
    cases = {
        "request line": (f"GET /v1/models?{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        "header count": (
            "GET /v1/models HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: y\r\n" for i in range(120)) + "\r\n",
            431,
        ),
        "header size": (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {'y' * 9000}\r\n\r\n", 431),
        "garbage": ("NOT HTTP AT ALL\r\n\r\n", 400),
        "bad chunk": (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            400,
        ),
    }
    for name, (request, expected) in cases.items():
        status = int(raw_exchange(gateway.port, request.encode()).split(b" ", 2)[1])
        assert status == expected, name
    assert requests.get(gateway.url + "/v1/models", headers=auth).status_code == 200


# --- staff JWTs with malformed claims -------------------------------------------------------------


def test_malformed_jwt_claims_are_401(gateway: LiveGateway) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")

    def token(kind: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {"token_type": kind, "exp": now + 300, "iat": now, "jti": "j" * 32, "user_id": user.pk}
        return jwt.encode({**payload, **claims}, settings.JWT_SIGNING_KEY, algorithm="HS256")

    def staff_get(path: str, raw: str) -> requests.Response:
        return requests.get(gateway.url + path, headers={"Authorization": f"Bearer {raw}"}, timeout=30)

    paths = ("/admin/routing/strategy", "/v1/reports/costs?start=2026-01-01&end=2026-01-02")
    for path in paths:
        assert staff_get(path, token("access")).status_code == 200, path
    assert requests.post(gateway.url + "/api/token/refresh/", json={"refresh": token("refresh")}).status_code == 200

    bad_ids = [[user.pk], {"id": user.pk}, "abc", 1.5, True, None, 10**30, -1, "", str(10**30), "١"]
    for bad in bad_ids:
        for path in paths:
            assert_openai_error(staff_get(path, token("access", user_id=bad)), 401)
        refresh = requests.post(gateway.url + "/api/token/refresh/", json={"refresh": token("refresh", user_id=bad)})
        assert_openai_error(refresh, 401)
    # a user that no longer exists, other malformed claims
    others = [{"user_id": user.pk + 1000}, {"token_type": ["access"]}, {"exp": "soon"}, {"iat": [1]}, {"jti": {"a": 1}}]
    for claims in others:
        for path in paths:
            response = staff_get(path, token("access", **claims))
            assert response.status_code in (401, 200), (claims, response.status_code)
            if response.status_code != 200:
                assert_openai_error(response, 401)
        refresh = requests.post(gateway.url + "/api/token/refresh/", json={"refresh": token("refresh", **claims)})
        assert refresh.status_code in (200, 401), (claims, refresh.text)
    assert_openai_error(staff_get(paths[0], token("access", user_id=user.pk + 1000)), 401)
