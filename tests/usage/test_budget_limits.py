"""Budgets hold whatever the client leaves out, and whatever happens to Redis.

- Without ``max_tokens`` a request holds the most its deployment can answer
  (``max_output_tokens``, else the context window minus the input), so 50 concurrent
  requests against an upstream answering 5,000 tokens spend at most the budget plus one
  request, on a real two-worker gunicorn sharing one Redis.
- A deployment whose output limit is unknown refuses budgeted requests without
  ``max_tokens`` (400 ``max_tokens_required``).
- With Redis stopped, a budget that fails closed answers 503 ``budget_unavailable``; one
  that fails open serves within each process's allowance, then answers 503 too.
- Budgets of fractions of a cent ($0.005) are kept exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json
from tests.procs import PrivateRedis, start_gateway
from usage import budgets
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello"}]


def _post(url: str, secret: str, **body: Any) -> requests.Response:
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, **body},
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},  # spread over the workers
        timeout=30,
    )


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def route(upstream: FakeOpenAI, make_provider: Any, make_deployment: Any, make_price: Any, redis_client: Any) -> Any:
    """``route(price, **deployment)``: ``MODEL`` on the loopback upstream at ``price`` dollars per
    million tokens, in and out."""

    def make(price: str, **deployment: Any) -> None:
        make_deployment(make_provider("up", base_url=upstream.url + "/v1", vendor="openai"), MODEL, **deployment)
        make_price("openai", MODEL, price, price)

    return make


def test_fifty_concurrent_requests_without_max_tokens_spend_at_most_the_budget_plus_one_request(
    tmp_path: Path,
    upstream: FakeOpenAI,
    route: Any,
    issue_key: Any,
    redis_client: Any,
) -> None:
    route("1", max_output_tokens=8192)  # $1 per million tokens: 5,000 output tokens = $0.005
    key, secret = issue_key(budget_usd=Decimal("0.01"), budget_period="day")
    # every answer is 5,000 tokens long, and slow enough that all 50 requests are in flight together
    upstream.queue(*[Reply(json=completion_json(completion_tokens=5000), delay=0.3) for _ in range(50)])
    server = start_gateway(tmp_path, workers=2).wait_healthy()
    try:
        start = threading.Barrier(50)

        def one(_: int) -> requests.Response:
            start.wait(timeout=30)
            return _post(server.url, secret)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(one, range(50)))
    finally:
        server.stop()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    admitted = [r for r in responses if r.status_code == 200]
    assert admitted, "no request was admitted"
    refused = [r.json()["error"]["code"] for r in responses if r.status_code == 429]
    assert set(refused) == {"budget_exceeded"}

    one_request = Decimal(admitted[0].headers["x-gateway-cost-usd"])
    assert one_request == Decimal("0.005012")  # 12 prompt + 5,000 completion tokens at $1/M
    spent = sum(Decimal(r.headers["x-gateway-cost-usd"]) for r in admitted)
    assert spent <= Decimal("0.01") + one_request
    counters = budgets.Budget("key", key.id, key.name, Decimal("0.01"), "day").counters(datetime.now(UTC))
    assert budgets.from_pico(int(redis_client.get(counters.spent))) == spent
    assert sum(int(redis_client.get(k) or 0) for k in (counters.hold, counters.previous_hold)) == 0
    drain(claim_idle_ms=0)
    records = UsageRecord.objects.filter(client_key_id=key.id, status="ok")
    assert records.count() == len(admitted)
    assert sum(r.cost_usd for r in records) == spent


def test_a_deployment_without_an_output_limit_needs_max_tokens_under_a_budget(
    gateway_url: str,
    route: Any,
    issue_key: Any,
    redis_client: Any,
) -> None:
    route("1")
    _, budgeted = issue_key(budget_usd=Decimal("1"), budget_period="day")
    _, unbudgeted = issue_key("free")
    refused = _post(gateway_url, budgeted)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "max_tokens_required" and error["param"] == "max_tokens"
    assert error["type"] == "invalid_request_error" and "max_output_tokens" in error["message"]
    assert _post(gateway_url, budgeted, max_tokens=50).status_code == 200
    assert _post(gateway_url, unbudgeted).status_code == 200  # no budget: nothing to bound


def test_the_output_bound_is_max_tokens_else_the_deployment_limit_else_the_context_window() -> None:
    from tests.routing.builders import deployment

    plain = deployment("d")
    limited = budgets.max_output_tokens
    assert limited(plain, 100, 50) == 50
    assert limited(plain, 100, None) is None
    with_window = plain.__class__(**{**_fields(plain), "context_window": 8000})
    assert limited(with_window, 1000, None) == 7000
    assert limited(with_window, 1000, 100_000) == 7000  # more than the model can answer is not held
    both = plain.__class__(**{**_fields(plain), "context_window": 8000, "max_output_tokens": 4096})
    assert limited(both, 1000, None) == 4096


def _fields(info: Any) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__slots__}


def test_budgets_of_fractions_of_a_cent_are_exact(
    gateway_url: str,
    route: Any,
    issue_key: Any,
    redis_client: Any,
) -> None:
    from accounts.models import ClientKey

    route("100")  # 19 tokens a request: $0.0019; the hold (max_tokens 7): ~$0.0015
    key, secret = issue_key(budget_usd=Decimal("0.005"), budget_period="day")
    assert ClientKey.objects.get(pk=key.pk).budget_usd == Decimal("0.005")
    statuses = [_post(gateway_url, secret, max_tokens=7).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # 0.0038 spent; 0.0038 + 0.0015 > 0.005


# --- Redis down -------------------------------------------------------------------------------


def test_with_redis_down_budgets_fail_closed_or_open_as_each_says(
    tmp_path: Path,
    route: Any,
    issue_key: Any,
) -> None:
    route("100")
    _, closed = issue_key("closed", budget_usd=Decimal("1"), budget_period="day")
    _, opened = issue_key("open", budget_usd=Decimal("1"), budget_period="day", budget_when_redis_down="open")
    _, free = issue_key("free")
    redis = PrivateRedis(tmp_path / "redis", durable=False).start()
    server = start_gateway(tmp_path, workers=2, redis_url=redis.url, GATEWAY_BUDGET_OUTAGE_SHARE="0.1").wait_healthy()
    try:
        for secret in (closed, opened, free):
            assert _post(server.url, secret, max_tokens=100).status_code == 200

        redis.stop()
        refused = _post(server.url, closed, max_tokens=100)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "budget_unavailable" and error["type"] == "api_error"
        assert "API key 'closed'" in error["message"] and set(error) == {"message", "type", "param", "code"}
        assert _post(server.url, free, max_tokens=100).status_code == 200  # no budget: served as usual

        # Fail open: each process holds up to 10% of the $1 budget at the requests' maximum cost
        # (~108 tokens at $100/M = ~$0.0108 each): 9 requests per process, 2 processes.
        statuses = [_post(server.url, opened, max_tokens=100) for _ in range(40)]
        served = sum(1 for r in statuses if r.status_code == 200)
        assert {r.status_code for r in statuses} == {200, 503}
        assert {r.json()["error"]["code"] for r in statuses if r.status_code == 503} == {"budget_unavailable"}
        assert 9 <= served <= 18, served

        redis.start()  # back (empty: counters are seeded again from Postgres)
        for _ in range(20):
            if _post(server.url, closed, max_tokens=100).status_code == 200:
                break
        else:
            pytest.fail("the closed budget did not recover once Redis was back")
    finally:
        server.stop()
        redis.stop()
