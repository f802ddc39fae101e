"""An upstream's 429 with ``Retry-After`` cools its deployment down for that long (capped).

Two OpenAI-compatible upstreams serve one model by priority. The first answers 429 with a
wait; the gateway falls back at once, then skips the first deployment without calling it
until the wait is over (the clock is moved, not slept), then uses it again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests

from providers.adapters.base import retry_after_seconds
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, error_json

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


@pytest.fixture
def upstreams() -> Iterator[list[FakeOpenAI]]:
    servers = [FakeOpenAI().start() for _ in range(2)]
    yield servers
    for server in servers:
        threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def gateway(upstreams: list[FakeOpenAI], openai_chain: Any) -> dict[str, Any]:
    return openai_chain(MODEL, dict(zip(("first", "second"), upstreams, strict=True)))


def post(gateway: dict[str, Any]) -> requests.Response:
    return requests.post(
        gateway["url"] + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {gateway['secret']}"},
        timeout=30,
    )


class Clock:
    """The project's monotonic clock, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from gatewaysite.clock import clock

        self.offset = 0.0
        real = clock.monotonic
        monkeypatch.setattr(clock, "monotonic", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def rate_limited(**headers: str) -> Reply:
    return Reply(status=429, json=error_json("slow down", code="rate_limit_exceeded"), headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "2"},
        {"retry-after-ms": "2000"},
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"},
    ],
    ids=["retry-after", "retry-after-ms", "x-ratelimit-reset"],
)
def test_a_429_with_a_wait_skips_the_deployment_for_that_long(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI], monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    clock = Clock(monkeypatch)
    upstreams[0].queue(rate_limited(**headers))
    first = post(gateway)
    assert first.status_code == 200 and first.headers["x-gateway-deployment"] == "second"
    # one failure is far below cooldown_failures (3): only the upstream's wait cools it down
    clock.advance(1.5)
    during = post(gateway)
    assert during.headers["x-gateway-deployment"] == "second" and during.headers["x-gateway-attempts"] == "1"
    assert [len(s.received) for s in upstreams] == [1, 2]
    clock.advance(0.6)  # 2.1 s after the 429
    after = post(gateway)
    assert after.headers["x-gateway-deployment"] == "first"
    assert [len(s.received) for s in upstreams] == [2, 2]


def test_a_429_without_a_wait_does_not_cool_the_deployment_down(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI]
) -> None:
    upstreams[0].queue(rate_limited())
    assert post(gateway).headers["x-gateway-deployment"] == "second"
    assert post(gateway).headers["x-gateway-deployment"] == "first"


def test_the_wait_is_capped_by_the_setting(
    gateway: dict[str, Any], upstreams: list[FakeOpenAI], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.GATEWAY = {**settings.GATEWAY, "RETRY_AFTER_MAX_SECONDS": 5.0}
    clock = Clock(monkeypatch)
    upstreams[0].queue(rate_limited(**{"retry-after": "3600"}))
    assert post(gateway).headers["x-gateway-deployment"] == "second"
    clock.advance(4.5)
    assert post(gateway).headers["x-gateway-deployment"] == "second"
    clock.advance(1.0)
    assert post(gateway).headers["x-gateway-deployment"] == "first"


def test_retry_after_header_forms() -> None:
    in_90_s = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 85 < (retry_after_seconds({"retry-after": in_90_s}) or 0) <= 90
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}) == 360
    assert retry_after_seconds({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"}) == 0.02
    # limits not used up, nonsense, dates in the past: no wait
    assert retry_after_seconds({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "Mon, 01 Jan 2001 00:00:00 GMT"}) is None
    assert retry_after_seconds({"retry-after-ms": "nan"}) is None
    assert retry_after_seconds({}) is None
