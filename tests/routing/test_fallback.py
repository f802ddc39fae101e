"""Fallback and health against real loopback providers that fail on purpose.

Three OpenAI-compatible upstreams serve one model, tried by priority (the model strategy):
first, second, third. Each test scripts the failures and checks who was called, what the
client got, and the gateway's headers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json, error_json, stream_events

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


@pytest.fixture
def upstreams() -> Iterator[list[FakeOpenAI]]:
    servers = [FakeOpenAI().start() for _ in range(3)]
    yield servers
    stoppers = [threading.Thread(target=server.stop) for server in servers]  # each stop waits for a poll
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


@pytest.fixture
def gateway(upstreams: list[FakeOpenAI], openai_chain: Any) -> dict[str, Any]:
    return openai_chain(MODEL, dict(zip(("first", "second", "third"), upstreams, strict=True)), read_timeout=5.0)


def settings(**fields: Any) -> None:
    from routing.models import RoutingSettings

    RoutingSettings.objects.update_or_create(pk=1, defaults=fields)


def post(gateway: dict[str, Any], *, stream: bool = False, **kwargs: Any) -> requests.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    if stream:
        body["stream"] = True
    return requests.post(
        gateway["url"] + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway['secret']}"},
        stream=stream,
        timeout=30,
        **kwargs,
    )


def calls(upstreams: list[FakeOpenAI]) -> list[int]:
    return [len(server.received) for server in upstreams]


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limit_exceeded"), (500, "server_error"), (503, "overloaded")])
def test_retryable_status_moves_to_the_next_deployment(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI], status: int, code: str
) -> None:
    upstreams[0].queue(Reply(status=status, json=error_json("try later", code=code)))
    response = post(gateway)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the fake provider."
    assert response.headers["x-gateway-deployment"] == "second"
    assert response.headers["x-gateway-attempts"] == "2"
    assert response.headers["x-gateway-strategy"] == "model"
    assert response.headers["x-gateway-route-reason"] == "priority"
    assert calls(upstreams) == [1, 1, 0]


def test_timeout_moves_to_the_next_deployment(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    from providers.models import Provider

    first = Provider.objects.get(name="first")
    first.read_timeout = 0.3
    first.save()
    upstreams[0].queue(Reply(json=completion_json(), delay=1.5))
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "second"
    assert response.headers["x-gateway-attempts"] == "2"


def test_connect_error_moves_to_the_next_deployment(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    from providers.models import Provider

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    first = Provider.objects.get(name="first")
    first.base_url = f"http://127.0.0.1:{port}/v1"
    first.connect_timeout = 1.0
    first.save()
    response = post(gateway)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "second"
    assert response.headers["x-gateway-attempts"] == "2"
    assert calls(upstreams)[1:] == [1, 0]


def test_client_errors_are_not_retried(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    upstreams[0].queue(Reply(status=400, json=error_json("'temperature' is too high", code="invalid_value")))
    response = post(gateway)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "temperature" in response.json()["error"]["message"]
    assert response.headers["x-gateway-attempts"] == "1"
    assert response.headers["x-gateway-deployment"] == "first"
    assert calls(upstreams) == [1, 0, 0]


def test_attempts_stop_at_max_attempts(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    settings(max_attempts=2)
    for server in upstreams:
        server.queue(Reply(status=503, json=error_json("overloaded")))
    response = post(gateway)
    assert response.status_code == 502
    assert response.json()["error"]["code"]
    assert response.headers["x-gateway-attempts"] == "2"
    assert response.headers["x-gateway-deployment"] == "second"
    assert calls(upstreams) == [1, 1, 0]


def test_when_every_deployment_fails_the_last_error_is_returned(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI]
) -> None:
    for server in upstreams:
        server.queue(Reply(status=429, json=error_json("slow down", code="rate_limit_exceeded")))
    response = post(gateway)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers["x-gateway-attempts"] == "3"
    assert calls(upstreams) == [1, 1, 1]


def test_stream_falls_back_before_the_first_byte(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    upstreams[0].queue(Reply(status=500, json=error_json("boom")))
    response = post(gateway, stream=True)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "second"
    assert response.headers["x-gateway-attempts"] == "2"
    text = response.content.decode()
    assert '"content":" stream."' in text.replace(": ", ":")
    assert text.rstrip().endswith("data: [DONE]")
    assert calls(upstreams) == [1, 1, 0]


def test_stream_broken_midway_is_not_retried(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    upstreams[0].queue(Reply(events=stream_events(["Hello", " there", " friend"]), close_after_events=2))
    response = post(gateway, stream=True)
    assert response.status_code == 200  # the status line went out with the first chunk
    assert response.headers["x-gateway-deployment"] == "first"
    frames = [line for line in response.content.decode().splitlines() if line.startswith("data: ")]
    assert '"Hello"' in frames[1]
    assert '"upstream_truncated"' in frames[-1]  # the client is told the stream broke, and no [DONE] follows
    assert "data: [DONE]" not in frames
    assert not any(" there" in frame for frame in frames)
    assert calls(upstreams) == [1, 0, 0]


def test_failing_deployment_is_cooled_down_then_retried(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatewaysite.clock import clock

    settings(cooldown_failures=2, cooldown_seconds=30.0)
    upstreams[0].queue(*[Reply(status=503, json=error_json("down"))] * 2)
    for _ in range(2):
        assert post(gateway).headers["x-gateway-attempts"] == "2"
    assert calls(upstreams) == [2, 2, 0]
    cooled = post(gateway)  # first is cooling down: skipped without a call
    assert cooled.headers["x-gateway-deployment"] == "second"
    assert cooled.headers["x-gateway-attempts"] == "1"
    assert calls(upstreams) == [2, 3, 0]

    later = clock.monotonic() + 31
    monkeypatch.setattr(clock, "monotonic", lambda: later)
    recovered = post(gateway)  # the cooldown is over and first answers again
    assert recovered.headers["x-gateway-deployment"] == "first"
    assert calls(upstreams) == [3, 3, 0]


def test_success_resets_the_failure_count(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    settings(cooldown_failures=2)
    upstreams[0].queue(Reply(status=503, json=error_json("down")))
    post(gateway)
    post(gateway)  # first succeeds: its one failure is forgotten
    upstreams[0].queue(Reply(status=503, json=error_json("down")))
    post(gateway)
    assert post(gateway).headers["x-gateway-deployment"] == "first"  # not cooled after 2 non-consecutive failures


def test_fallback_follows_the_balanced_order(gateway: dict[str, Any], upstreams: list[FakeOpenAI]) -> None:
    settings(strategy="balanced")
    for server in upstreams:
        server.queue(Reply(status=503, json=error_json("down")))
    response = post(gateway)  # all three fail once: every deployment is tried exactly once
    assert response.status_code == 502
    assert response.headers["x-gateway-strategy"] == "balanced"
    assert response.headers["x-gateway-route-reason"] == "round-robin"
    assert calls(upstreams) == [1, 1, 1]
