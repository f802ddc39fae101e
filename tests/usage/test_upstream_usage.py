"""Usage the upstream reports implausibly is an anomaly on the record, billed as the gateway's
estimate: never a negative cost, never a lower key spend, never an ingestion that fails."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from providers.adapters import anthropic, gemini
from providers.adapters.base import MAX_PLAUSIBLE_TOKENS, Usage
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import completion_json, stream_events
from usage.consumer import drain
from usage.cost import to_picodollars
from usage.models import UsageRecord

HELLO = [{"role": "user", "content": "Hello"}]


def test_plausible_usage_is_read_as_is() -> None:
    usage = Usage.from_openai(
        {"prompt_tokens": 12, "completion_tokens": 7.0, "prompt_tokens_details": {"cached_tokens": 4}}
    )
    assert usage == Usage(prompt_tokens=12, completion_tokens=7, cached_tokens=4)
    assert Usage.from_openai({"prompt_tokens": MAX_PLAUSIBLE_TOKENS}).anomaly == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 5_000_000_000, "completion_tokens": 3}, "prompt_tokens=5000000000"),
        ({"prompt_tokens": 10, "completion_tokens": -100000}, "completion_tokens=-100000"),
        ({"prompt_tokens": "12", "completion_tokens": 3}, "prompt_tokens=<str of 2 chars> (not an integer)"),
        ({"prompt_tokens": 1.5, "completion_tokens": 3}, "prompt_tokens=1.5"),
        ({"prompt_tokens": True, "completion_tokens": 3}, "prompt_tokens=True"),
        ({"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": -4}}, "cached_tokens=-4"),
    ],
)
def test_implausible_openai_usage_is_an_anomaly(raw: dict[str, Any], expected: str) -> None:
    usage = Usage.from_openai(raw)
    assert usage is not None and expected in usage.anomaly
    assert min(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) >= 0


def test_every_adapter_checks_usage_and_the_anomaly_survives_translation() -> None:
    claude = anthropic.usage_of({"input_tokens": -3, "output_tokens": 5, "cache_read_input_tokens": 2})
    assert "input_tokens=-3" in claude.anomaly and claude.prompt_tokens == 2
    google = gemini.usage_of({"promptTokenCount": 6_000_000_000, "candidatesTokenCount": "x"})
    assert "promptTokenCount=6000000000" in google.anomaly and "candidatesTokenCount=<str of 1 chars>" in google.anomaly
    # a translated stream's usage chunk is parsed again by the request path: the anomaly stays
    again = Usage.from_openai(claude.to_openai())
    assert again is not None and again.anomaly == claude.anomaly


def _spend(redis_client: Any, key_id: int) -> int:
    return int(redis_client.get(f"{{gw}}:spend:key:{key_id}") or 0)


@pytest.mark.django_db(transaction=True)
def test_overflowing_and_negative_usage_through_the_sdk(
    openai_route: dict[str, Any], openai_for: Any, redis_client: Any
) -> None:
    from accounts.models import ClientKey

    key_id = ClientKey.objects.get().id
    fake = openai_route["fake"]
    client = openai_for(openai_route["secret"])
    fake.queue(
        Reply(json=completion_json(prompt_tokens=12, completion_tokens=7)),
        Reply(json=completion_json(prompt_tokens=5_000_000_000, completion_tokens=7)),
        Reply(json=completion_json(prompt_tokens=-1_000_000, completion_tokens=-1_000_000)),
        Reply(events=stream_events(prompt_tokens=-5, completion_tokens=-100_000)),
    )
    ids, costs, spends = [], [], []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        raw.parse()
        ids.append(raw.headers["x-request-id"])
        costs.append(Decimal(raw.headers["x-gateway-cost-usd"]))
        spends.append(Decimal(raw.headers["x-gateway-key-spend-usd"]))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    gateway = chunks[-1].model_extra["x_gateway"]
    costs.append(Decimal(gateway["cost_usd"]))
    spends.append(Decimal(gateway["key_spend_usd"]))

    assert all(cost > 0 for cost in costs), costs  # the estimate: never negative, never zero
    assert spends == sorted(spends) and spends[0] > 0  # the key's spend only ever grows
    assert drain() == 4  # nothing stuck in the stream
    records = {r.request_id: r for r in UsageRecord.objects.all()}
    normal, overflow, negative = (records[i] for i in ids)
    (streamed,) = (r for r in records.values() if r.stream)
    assert normal.usage_anomaly == "" and not normal.usage_estimated and normal.prompt_tokens == 12
    assert "prompt_tokens=5000000000" in overflow.usage_anomaly
    assert "prompt_tokens=-1000000" in negative.usage_anomaly and "completion_tokens=-1000000" in negative.usage_anomaly
    assert "completion_tokens=-100000" in streamed.usage_anomaly
    for record in (overflow, negative, streamed):
        assert record.usage_estimated and record.status == "ok"
        assert 0 < record.prompt_tokens < 100 and record.completion_tokens >= 0
    assert [records[i].cost_usd for i in ids] + [streamed.cost_usd] == costs
    total = sum(r.cost_usd for r in records.values())
    assert _spend(redis_client, key_id) == to_picodollars(total)
