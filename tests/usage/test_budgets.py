"""Budgets: atomic reservation of the maximum cost, settlement of the actual cost, refusals, restarts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from usage import budgets

pytestmark = pytest.mark.django_db(transaction=True)

# Every request: 12 prompt + 7 completion tokens upstream (the fake's usage) at $1000 per million
# = $0.019. The reservation: 7 input tokens (tiktoken) + max_tokens 7 = $0.014 at that price.
PRICE = "1000"
ACTUAL = Decimal("0.019")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 7}


@pytest.fixture
def budgeted(
    fake_openai: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> Any:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, "gpt-4o-mini")
    make_price("openai", "gpt-4o-mini", PRICE, PRICE)
    budgets.forget_seeding()

    def make(budget: str, period: str = "day", **fields: Any) -> tuple[Any, str]:
        return issue_key(budget_usd=Decimal(budget), budget_period=period, **fields)

    make.fake = fake_openai  # type: ignore[attr-defined]
    return make


def _post(url: str, secret: str, body: dict[str, Any] = BODY) -> requests.Response:
    return requests.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def test_periods_are_utc_days_and_months() -> None:
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert budgets.period_id("day", at) == "2026-12-31" and budgets.period_id("month", at) == "2026-12"
    assert budgets.period_bounds("month", at) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert budgets.period_bounds("day", at)[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_over_budget_requests_get_429_and_holds_are_released(
    gateway_url: str, budgeted: Any, redis_client: Any
) -> None:
    key, secret = budgeted("0.05")
    statuses = [_post(gateway_url, secret).status_code for _ in range(4)]
    # 0.019 + 0.019 = 0.038; a third would need 0.038 + 0.014 held > 0.05
    assert statuses == [200, 200, 429, 429]
    refused = _post(gateway_url, secret)
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert "daily budget of API key 'test-key' is $0.05" in error["message"]
    at = datetime.now(UTC)
    counters = budgets.Budget("key", key.id, key.name, Decimal("0.05"), "day").counters(at)
    assert budgets.from_pico(int(redis_client.get(counters.spent))) == 2 * ACTUAL
    held = sum(int(redis_client.get(k) or 0) for k in (counters.hold, counters.previous_hold))
    assert held == 0


def test_fifty_concurrent_requests_never_overspend(
    gateway_url: str, live_server: Any, budgeted: Any, redis_client: Any
) -> None:
    # the test server listens with a backlog of 10; let 50 simultaneous connections queue
    live_server.thread.httpd.socket.listen(128)
    from tests.fakes.http_server import Reply
    from tests.fakes.openai_server import completion_json

    key, secret = budgeted("0.10")
    # the provider reports what the gateway estimated (7 in, max_tokens 7 out): $0.014 a request
    fake = budgeted.fake
    fake.queue(*[Reply(json=completion_json(prompt_tokens=7, completion_tokens=7)) for _ in range(50)])
    start = threading.Barrier(50)

    def one(_: int) -> int:
        start.wait(timeout=30)
        return _post(gateway_url, secret).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(one, range(50)))
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and ok > 0
    spent = ok * Decimal("0.014")
    one_request_max = Decimal("0.014")  # the reservation: input estimate + max_tokens at the price
    assert spent <= Decimal("0.10") + one_request_max
    assert ok == 7  # 7 * 0.014 = 0.098: every hold that fits was granted, none more
    counters = budgets.Budget("key", key.id, key.name, Decimal("0.10"), "day").counters(datetime.now(UTC))
    assert budgets.from_pico(int(redis_client.get(counters.spent))) == spent
    assert sum(int(redis_client.get(k) or 0) for k in (counters.hold, counters.previous_hold)) == 0


def test_team_budget_applies_to_all_its_keys(gateway_url: str, budgeted: Any, issue_key: Any) -> None:
    from accounts.models import Team

    team = Team.objects.create(name="research", budget_usd=Decimal("0.03"), budget_period="month")
    _, first = issue_key("a", team=team)
    _, second = issue_key("b", team=team)
    assert _post(gateway_url, first).status_code == 200
    refused = _post(gateway_url, second)
    assert refused.status_code == 429 and "monthly budget of team 'research'" in refused.json()["error"]["message"]


def test_budget_counters_are_seeded_from_the_database_after_a_redis_restart(
    gateway_url: str, budgeted: Any, redis_client: Any
) -> None:
    from usage.consumer import drain
    from usage.models import UsageRecord

    key, secret = budgeted("0.05")
    assert _post(gateway_url, secret).status_code == 200
    assert _post(gateway_url, secret).status_code == 200
    drain(claim_idle_ms=0)
    assert UsageRecord.objects.filter(client_key_id=key.id).count() == 2
    redis_client.flushdb()  # Redis restarted without persistence
    budgets.forget_seeding()
    assert _post(gateway_url, secret).status_code == 429  # still 0.038 spent today, from Postgres
    more, more_secret = budgeted("1")
    UsageRecord.objects.filter(client_key_id=key.id).update(client_key_id=more.id)
    response = _post(gateway_url, more_secret)
    assert response.status_code == 200
    assert response.headers["x-gateway-key-spend-usd"] == str(3 * ACTUAL)


def test_a_budget_cannot_be_enforced_on_an_unpriced_model(
    gateway_url: str, budgeted: Any, make_provider: Any, make_deployment: Any, fake_openai: Any
) -> None:
    provider = make_provider("other", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    _, secret = budgeted("10")
    response = _post(gateway_url, secret, {**BODY, "model": "gpt-4o"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "budget_unpriced_model"


def test_failed_requests_release_their_hold(
    gateway_url: str, budgeted: Any, fake_openai: Any, redis_client: Any
) -> None:
    from tests.fakes.http_server import Reply
    from tests.fakes.openai_server import error_json

    key, secret = budgeted("0.02")
    fake_openai.queue(Reply(status=400, json=error_json("bad", code="bad")))
    assert _post(gateway_url, secret).status_code == 400
    counters = budgets.Budget("key", key.id, key.name, Decimal("0.02"), "day").counters(datetime.now(UTC))
    assert sum(int(redis_client.get(k) or 0) for k in (counters.hold, counters.previous_hold)) == 0
    assert _post(gateway_url, secret).status_code == 200


def test_embedded_mode_reserves_under_a_lock(
    settings: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any
) -> None:
    """No Redis: the same check-and-hold, atomic in process."""
    from accounts.keycache import key_cache
    from gatewaysite.api.errors import BudgetExceeded
    from gatewaysite.redis_client import reset_redis
    from providers.pricing.cost import to_picodollars
    from routing.config.cache import config_cache
    from routing.strategies.base import RouteRequest
    from usage.recorder import local_counters

    settings.REDIS_URL = ""
    reset_redis()
    try:
        provider = make_provider("m", kind="mock", vendor="mock")
        make_deployment(provider, "mock-gpt")
        make_price("mock", "mock-gpt", PRICE, PRICE)
        row, secret = issue_key(budget_usd=Decimal("0.10"), budget_period="month")
        info = key_cache.authenticate(secret)
        route = RouteRequest(
            model="mock-gpt",
            body={"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 7},
            stream=False,
            key=info,
            snapshot=config_cache.current(),
        )
        start = threading.Barrier(20)

        def one(_: int) -> bool:
            start.wait(timeout=30)
            try:
                budgets.reserve(info, route)
            except BudgetExceeded:
                return False
            return True

        with ThreadPoolExecutor(max_workers=20) as pool:
            granted = sum(pool.map(one, range(20)))
        hold = budgets.max_request_cost(route, datetime.now(UTC))
        assert hold is not None and hold > 0
        assert granted == int(Decimal("0.10") / hold)  # exactly as many holds as fit, no more
        counters = budgets.budgets_for(info)[0].counters(datetime.now(UTC))
        assert local_counters.get(counters.hold) == to_picodollars(hold) * granted
    finally:
        reset_redis()
