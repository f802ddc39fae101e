"""``POST /v1/embeddings`` with the official openai SDK against a live gateway.

Upstreams are loopback fakes of each wire format (OpenAI-compatible, Azure, Gemini) and
the built-in mock; every request goes through the same keys, routing, fallback, pricing
and usage records as chat completions.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
import requests

from tests.fakes.azure_server import FakeAzure
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, embedding_vector, error_json
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "text-embedding-3-small"


def _records() -> list[UsageRecord]:
    drain(claim_idle_ms=0)
    return list(UsageRecord.objects.order_by("created_at"))


@pytest.fixture
def embed_route(make_openai_route: Any, redis_client: Any) -> dict[str, Any]:
    return make_openai_route(MODEL, "0.02", "0", endpoint="embeddings")


def test_sdk_default_base64_is_decoded_to_the_upstream_floats(embed_route: dict[str, Any], openai_for: Any) -> None:
    raw = openai_for(embed_route["secret"]).embeddings.with_raw_response.create(model=MODEL, input="hello world")
    result = raw.parse()
    sent = embed_route["fake"].received[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body["encoding_format"] == "base64"  # the SDK's default, passed through
    assert result.data[0].embedding == embedding_vector("hello world")
    assert result.usage.prompt_tokens == 2
    assert raw.headers["x-gateway-deployment"] == "up-text-embedding-3-small"
    assert raw.headers["x-gateway-cost-usd"] == "0.00000004"  # 2 tokens at $0.02 per million
    (record,) = _records()
    assert record.endpoint == "embeddings"
    assert record.prompt_tokens == 2 and record.completion_tokens == 0
    assert record.cost_usd == Decimal("0.00000004")


def test_float_batch_token_arrays_and_dimensions(embed_route: dict[str, Any], openai_for: Any) -> None:
    client = openai_for(embed_route["secret"])
    result = client.embeddings.create(model=MODEL, input=["a b", "c"], encoding_format="float", dimensions=4)
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[1].embedding == embedding_vector("c", 4)
    assert embed_route["fake"].received[-1].body["dimensions"] == 4
    tokens = client.embeddings.create(model=MODEL, input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(tokens.data) == 2
    assert embed_route["fake"].received[-1].body["input"] == [[1, 2, 3], [4]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", 3]}, "input[1]"),
        ({"input": [[1, "x"]]}, "input[0]"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({}, "input"),
    ],
)
def test_bad_bodies_get_openai_errors(
    embed_route: dict[str, Any], gateway_url: str, body: dict[str, Any], param: str
) -> None:
    response = requests.post(
        gateway_url + "/v1/embeddings",
        json={"model": MODEL, **body},
        headers={"authorization": f"Bearer {embed_route['secret']}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert embed_route["fake"].received == []


def test_chat_and_embedding_models_are_kept_apart(
    embed_route: dict[str, Any], openai_for: Any, make_provider: Any, make_deployment: Any
) -> None:
    chat = make_provider("chat", base_url=embed_route["fake"].url + "/v1")
    make_deployment(chat, "gpt-4o-mini")
    client = openai_for(embed_route["secret"])
    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model="gpt-4o-mini", input="x")
    assert error.value.body["code"] == "wrong_endpoint"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in error.value.body["message"]
    assert embed_route["fake"].received == []


def test_fallback_to_the_next_deployment(
    embed_route: dict[str, Any], openai_for: Any, make_provider: Any, make_deployment: Any
) -> None:
    second = FakeOpenAI().start()
    try:
        backup = make_provider("backup", base_url=second.url + "/v1", vendor="openai")
        make_deployment(backup, MODEL, endpoint="embeddings", priority=200)
        embed_route["fake"].queue(Reply(status=503, json=error_json("overloaded", code="overloaded")))
        raw = openai_for(embed_route["secret"]).embeddings.with_raw_response.create(model=MODEL, input="x")
        assert raw.headers["x-gateway-provider"] == "backup"
        assert raw.headers["x-gateway-attempts"] == "2"
        assert len(second.received) == 1
        (record,) = _records()
        assert record.attempts == 2 and record.provider == "backup" and record.status == "ok"
    finally:
        second.stop()


def test_upstream_client_error_is_not_retried(embed_route: dict[str, Any], openai_for: Any) -> None:
    embed_route["fake"].queue(Reply(status=400, json=error_json("too many tokens", code="context_length_exceeded")))
    with pytest.raises(openai.BadRequestError):
        openai_for(embed_route["secret"]).embeddings.create(model=MODEL, input="x")
    (record,) = _records()
    assert record.endpoint == "embeddings" and record.status == "error" and record.http_status == 400


@pytest.fixture
def fake_azure() -> Iterator[FakeAzure]:
    server = FakeAzure().start()
    yield server
    server.stop()


def test_azure_embeddings(
    fake_azure: FakeAzure, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, openai_for: Any
) -> None:
    provider = make_provider(
        "az", kind="azure", base_url=fake_azure.url, api_key="az-test-key", options={"api_version": "2024-10-21"}
    )
    make_deployment(provider, MODEL, provider_model="emb-small", endpoint="embeddings")
    make_price("azure", "emb-small", "0.02", "0")
    _, secret = issue_key()
    result = openai_for(secret).embeddings.create(model=MODEL, input=["one", "two"])
    assert result.data[0].embedding == embedding_vector("one")
    sent = fake_azure.received[-1]
    assert sent.path == "/openai/deployments/emb-small/embeddings?api-version=2024-10-21"
    assert sent.headers["api-key"] == "az-test-key"


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    yield server
    server.stop()


def test_gemini_embed_and_batch_embed(
    fake_gemini: FakeGemini,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    openai_for: Any,
    redis_client: Any,
) -> None:
    provider = make_provider("gm", kind="gemini", base_url=fake_gemini.url, api_key="gm-test-key")
    make_deployment(provider, "gemini-embedding", provider_model="gemini-embedding-001", endpoint="embeddings")
    make_price("gemini", "gemini-embedding-001", "0.15", "0")
    _, secret = issue_key()
    client = openai_for(secret)

    one = client.embeddings.create(model="gemini-embedding", input="hello there", dimensions=6)
    sent = fake_gemini.received[-1]
    assert sent.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert sent.body == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "hello there"}]},
        "outputDimensionality": 6,
    }
    assert one.data[0].embedding == embedding_vector(
        "hello there", 6
    )  # base64 encoded by the gateway, decoded by the SDK
    # Gemini reports no token count: the gateway's own count, billed and marked estimated
    assert one.usage.prompt_tokens > 0

    many = client.embeddings.create(model="gemini-embedding", input=["a", "b", "c"], encoding_format="float")
    sent = fake_gemini.received[-1]
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [r["content"]["parts"][0]["text"] for r in sent.body["requests"]] == ["a", "b", "c"]
    assert [d.embedding for d in many.data] == [embedding_vector(t) for t in "abc"]

    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model="gemini-embedding", input=[1, 2, 3])
    assert error.value.body["code"] == "unsupported_parameter"
    assert len(fake_gemini.received) == 2

    records = [r for r in _records() if r.status == "ok"]
    assert all(r.usage_estimated and r.endpoint == "embeddings" and r.cost_usd > 0 for r in records)


def test_mock_provider_serves_embeddings_offline(
    make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, openai_for: Any, redis_client: Any
) -> None:
    mock = make_provider("mock", kind="mock", vendor="mock")
    make_deployment(mock, MODEL, endpoint="embeddings")
    make_price("mock", MODEL, "0.02", "0")
    _, secret = issue_key()
    client = openai_for(secret)
    first = client.embeddings.create(model=MODEL, input=["same text", "other"])
    again = client.embeddings.create(model=MODEL, input="same text", encoding_format="float")
    assert len(first.data[0].embedding) == 1536
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, rel=1e-6)
    assert first.data[0].embedding != first.data[1].embedding
    assert sum(v * v for v in again.data[0].embedding) == pytest.approx(1.0, rel=1e-4)
    small = client.embeddings.create(model=MODEL, input="x", dimensions=32)
    assert len(small.data[0].embedding) == 32


def test_raw_base64_is_float32_little_endian(
    make_provider: Any, make_deployment: Any, issue_key: Any, gateway_url: str
) -> None:
    mock = make_provider("mock", kind="mock", vendor="mock")
    make_deployment(mock, MODEL, endpoint="embeddings")
    _, secret = issue_key()
    headers = {"authorization": f"Bearer {secret}"}
    body = {"model": MODEL, "input": "bytes", "dimensions": 16}
    floats = requests.post(gateway_url + "/v1/embeddings", json=body, headers=headers, timeout=10).json()
    packed = requests.post(
        gateway_url + "/v1/embeddings", json={**body, "encoding_format": "base64"}, headers=headers, timeout=10
    ).json()
    decoded = struct.unpack("<16f", base64.b64decode(packed["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


def test_estimate_and_explain_take_embedding_bodies(embed_route: dict[str, Any], gateway_url: str) -> None:
    headers = {"authorization": f"Bearer {embed_route['secret']}"}
    body = {"model": MODEL, "input": ["hello world", "again"]}
    estimate = requests.post(gateway_url + "/v1/routing/estimate-cost", json=body, headers=headers, timeout=10)
    assert estimate.status_code == 200, estimate.text
    data = estimate.json()
    assert data["endpoint"] == "embeddings"
    assert data["expected_output_tokens"] == 0
    assert data["expected_output_tokens_source"] == "none"
    (candidate,) = data["candidates"]
    tokens = candidate["input_tokens"]
    assert tokens >= 3
    assert Decimal(candidate["estimated_cost_usd"]) == Decimal(tokens) * Decimal("0.02") / 1_000_000
    explain = requests.post(gateway_url + "/v1/routing/explain", json=body, headers=headers, timeout=10)
    assert explain.status_code == 200
    assert explain.json()["endpoint"] == "embeddings"
    assert explain.json()["chosen"] == "up-text-embedding-3-small"
    assert embed_route["fake"].received == []


def test_budgeted_key_reserves_input_only(
    embed_route: dict[str, Any], issue_key: Any, openai_for: Any, redis_client: Any
) -> None:
    """Embeddings have no output: a budgeted key needs no max_tokens (the deployment sets no
    output limit) and a budget too small for the input is refused before the upstream."""
    from usage import budgets

    budgets.forget_seeding()
    _, secret = issue_key("budgeted", budget_usd=Decimal("1"), budget_period="day")
    result = openai_for(secret).embeddings.create(model=MODEL, input="within budget")
    assert result.data
    _, tiny = issue_key("tiny", budget_usd=Decimal("0.000001"), budget_period="day")
    with pytest.raises(openai.RateLimitError):
        openai_for(tiny).embeddings.create(model=MODEL, input="word " * 200)  # 200 tokens: $0.000004
    assert len(embed_route["fake"].received) == 1
