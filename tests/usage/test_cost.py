"""Exact cost: cached and cache-write tokens at their own prices, price history, headers and stream extra."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from providers.adapters.base import Usage
from providers.pricing.cost import cost_of, estimate_cost, format_usd, from_picodollars, to_picodollars
from providers.pricing.prices import Price
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import completion_json

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _price(i: str, o: str, cached: str | None = None, write: str | None = None, write_1h: str | None = None) -> Price:
    write = write if write is not None else i
    return Price(
        id=1,
        input_per_mtok=Decimal(i),
        output_per_mtok=Decimal(o),
        cached_input_per_mtok=Decimal(cached if cached is not None else i),
        cache_write_per_mtok=Decimal(write),
        cache_write_1h_per_mtok=Decimal(write_1h if write_1h is not None else write),
        effective_from=T0,
    )


def test_plain_cost_is_exact() -> None:
    assert cost_of(Usage(prompt_tokens=12, completion_tokens=7), _price("0.15", "0.60")) == Decimal("0.000006")
    # a price with 6 decimals per million: 1 token costs 1e-12, exactly
    assert cost_of(Usage(prompt_tokens=1), _price("0.000001", "0")) == Decimal("0.000000000001")


def test_cached_and_cache_write_tokens_are_billed_once_at_their_own_price() -> None:
    # Anthropic-like: 1000 prompt tokens of which 600 read from cache and 300 written to it
    price = _price("3", "15", cached="0.30", write="3.75")
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=600, cache_creation_tokens=300)
    expected = (Decimal(100) * 3 + Decimal(600) * Decimal("0.30") + Decimal(300) * Decimal("3.75") + 200 * 15) / 10**6
    assert cost_of(usage, price) == expected == Decimal("0.004605")
    # never billed as plain input too: cheaper than the same tokens without cache
    assert cost_of(usage, price) < cost_of(Usage(prompt_tokens=1000, completion_tokens=200), price)


def test_one_hour_cache_writes_are_billed_at_their_own_price() -> None:
    # Anthropic: 5-minute writes 1.25x input, 1-hour writes 2x; 300 written, 100 of them for an hour
    price = _price("3", "15", cached="0.30", write="3.75", write_1h="6")
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=200,
        cached_tokens=600,
        cache_creation_tokens=300,
        cache_creation_1h_tokens=100,
    )
    expected = (
        Decimal(100) * 3 + Decimal(600) * Decimal("0.30") + Decimal(200) * Decimal("3.75") + Decimal(100) * 6 + 200 * 15
    ) / 10**6
    assert cost_of(usage, price) == expected == Decimal("0.004830")
    # more one-hour tokens than writes (inconsistent usage) never bills more than the writes
    usage.cache_creation_1h_tokens = 10_000
    assert cost_of(usage, price) == (Decimal(100) * 3 + Decimal(600) * Decimal("0.30") + 300 * 6 + 200 * 15) / 10**6


def test_one_hour_writes_survive_the_openai_shape() -> None:
    # streams hand usage on in OpenAI's shape: the split must come through
    usage = Usage(
        prompt_tokens=50, completion_tokens=5, cached_tokens=10, cache_creation_tokens=30, cache_creation_1h_tokens=12
    )
    assert Usage.from_openai(usage.to_openai()) == usage
    assert "cache_creation_1h_tokens" not in str(Usage(prompt_tokens=5, cached_tokens=1).to_openai())


def test_inconsistent_usage_never_bills_more_tokens_than_the_prompt() -> None:
    price = _price("1", "1", cached="0.5", write="2")
    usage = Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=8, cache_creation_tokens=8)
    assert cost_of(usage, price) == (Decimal(8) * Decimal("0.5") + 2 * 2) / 10**6


def test_estimate_and_counters_round_trip() -> None:
    cost = estimate_cost(7, 256, _price("30", "60"))
    assert cost == Decimal("0.01557")
    assert from_picodollars(to_picodollars(cost)) == cost
    assert format_usd(Decimal("0.000125000000")) == "0.000125" and format_usd(None) == "unknown"


@pytest.mark.django_db
def test_a_request_is_priced_by_the_row_in_effect_when_it_ran(
    make_provider: Any, make_deployment: Any, make_price: Any
) -> None:
    from routing.config.loader import load_snapshot

    provider = make_provider("up", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    make_price("openai", "gpt-4o", "5", "15", effective_from=T0)
    make_price("openai", "gpt-4o", "2.5", "10", effective_from=T0 + timedelta(days=100))
    snapshot = load_snapshot(1)
    dep = snapshot.deployments_by_name["up-gpt-4o"]
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    assert cost_of(usage, snapshot.price_for(dep, T0 + timedelta(days=99))) == Decimal("0.02")
    assert cost_of(usage, snapshot.price_for(dep, T0 + timedelta(days=100))) == Decimal("0.0125")
    assert snapshot.price_for(dep, T0 - timedelta(seconds=1)) is None


@pytest.mark.django_db(transaction=True)
def test_live_costs_with_cached_tokens_and_later_price_change(
    fake_openai: Any,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    openai_for: Any,
    redis_client: Any,
) -> None:
    from usage.consumer import drain
    from usage.models import UsageRecord

    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    make_price("openai", "gpt-4o", "2.50", "10.00", cached_input_per_mtok=Decimal("1.25"))
    _, secret = issue_key()
    fake_openai.queue(Reply(json=completion_json(prompt_tokens=2000, completion_tokens=100, cached_tokens=1500)))
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
    )
    # 500 * 2.50 + 1500 * 1.25 + 100 * 10 per million
    assert raw.headers["x-gateway-cost-usd"] == "0.004125"
    assert raw.headers["x-gateway-key-spend-usd"] == "0.004125"
    request_id = raw.headers["x-request-id"]
    # a new price from now on changes nothing already billed
    make_price("openai", "gpt-4o", "100", "100", effective_from=datetime.now(UTC))
    drain(claim_idle_ms=0)
    record = UsageRecord.objects.get(request_id=request_id)
    assert record.cost_usd == Decimal("0.004125") and record.cached_tokens == 1500
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
    )
    assert raw.headers["x-gateway-cost-usd"] == "0.0019"  # (12 + 7) * 100 per million
    assert raw.headers["x-gateway-key-spend-usd"] == "0.006025"
    assert UsageRecord.objects.get(request_id=request_id).cost_usd == Decimal("0.004125")


@pytest.mark.django_db(transaction=True)
def test_unpriced_deployment_costs_unknown_not_zero(
    fake_openai: Any, make_provider: Any, make_deployment: Any, issue_key: Any, openai_for: Any, redis_client: Any
) -> None:
    from usage.consumer import drain
    from usage.models import UsageRecord

    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    _, secret = issue_key()
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
    )
    assert raw.headers["x-gateway-cost-usd"] == "unknown"
    stream = openai_for(secret).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(stream)[-1]
    assert last.model_extra["x_gateway"]["cost_usd"] == "unknown"
    drain(claim_idle_ms=0)
    assert list(UsageRecord.objects.values_list("cost_usd", flat=True)) == [None, None]
