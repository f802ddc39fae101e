"""``POST /v1/routing/estimate-cost``: token counts, tokenizer, expected output, cost per candidate, the choice."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from usage import tokens

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def setup(make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any) -> dict[str, Any]:
    openai = make_provider("oa", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(openai, "gpt-4", priority=10)
    mock = make_provider("mock", kind="mock", vendor="mock")
    make_deployment(mock, "gpt-4", priority=20)
    claude = make_provider("claude", kind="anthropic", base_url="http://127.0.0.1:9", vendor="anthropic")
    make_deployment(claude, "gpt-4", name="claude-for-gpt-4", provider_model="claude-sonnet-4", priority=30)
    make_price("openai", "gpt-4", "30", "60")
    make_price("mock", "gpt-4", "3", "6")
    # claude-sonnet-4 deliberately has no price: unknown, never zero
    _, secret = issue_key()
    return {"secret": secret}


def _post(client: Any, secret: str, body: Any, **extra: Any) -> Any:
    return client.post(
        "/v1/routing/estimate-cost",
        data=json.dumps(body) if not isinstance(body, bytes) else body,
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        **extra,
    )


def test_estimate_counts_tokens_and_prices_every_candidate(client: Any, setup: dict[str, Any]) -> None:
    response = _post(client, setup["secret"], HELLO)
    assert response.status_code == 200, response.content
    data = response.json()
    by_name = {c["deployment"]: c for c in data["candidates"]}
    oa = by_name["oa-gpt-4"]
    # tiktoken cl100k_base: "Hello" is 1 token, plus 3 per message and 3 to prime the reply
    assert oa["tokenizer"] == "tiktoken/cl100k_base" and oa["tokenizer_exact"] is True
    assert oa["input_tokens"] == 7
    assert oa["expected_output_tokens"] == 256 and data["expected_output_tokens_source"] == "default"
    # (7 * 30 + 256 * 60) / 1e6
    assert Decimal(oa["estimated_cost_usd"]) == (Decimal(7 * 30 + 256 * 60) / Decimal(10**6))
    assert by_name["mock-gpt-4"]["estimated_cost_usd"] == "0.001557"
    claude = by_name["claude-for-gpt-4"]
    assert claude["tokenizer"] == "approx-chars/4" and claude["tokenizer_exact"] is False
    assert claude["input_tokens"] == 2 + 6  # ceil(5 / 4) = 2, plus the same framing
    assert claude["priced"] is False and claude["estimated_cost_usd"] is None
    # the model strategy: lowest priority number first
    assert data["chosen"] == "oa-gpt-4" and oa["chosen"] is True and oa["rank"] == 1
    assert data["estimated_cost_usd"] == oa["estimated_cost_usd"]
    assert data["max_cost_usd"] == oa["estimated_cost_usd"]
    assert data["strategy"] == "model"


def test_max_tokens_sets_expected_output(client: Any, setup: dict[str, Any]) -> None:
    data = _post(client, setup["secret"], {**HELLO, "max_tokens": 10}).json()
    oa = next(c for c in data["candidates"] if c["deployment"] == "oa-gpt-4")
    assert oa["expected_output_tokens"] == 10 and data["expected_output_tokens_source"] == "max_tokens"
    assert oa["estimated_cost_usd"] == "0.00081"  # (7 * 30 + 10 * 60) / 1e6


def test_o200k_models_use_their_own_encoding(
    client: Any, setup: dict[str, Any], make_provider: Any, make_deployment: Any
) -> None:
    provider = make_provider("oa2", base_url="http://127.0.0.1:9/v1", vendor="openai")
    make_deployment(provider, "gpt-4o")
    data = _post(
        client, setup["secret"], {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
    ).json()
    (only,) = data["candidates"]
    assert only["tokenizer"] == "tiktoken/o200k_base" and only["input_tokens"] == 7
    assert only["priced"] is False and data["estimated_cost_usd"] is None and data["max_cost_usd"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        ({"messages": [{"role": "user", "content": "x"}]}, 400),
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404),
    ],
)
def test_bad_requests_get_openai_shaped_errors(client: Any, setup: dict[str, Any], body: Any, status: int) -> None:
    response = _post(client, setup["secret"], body)
    assert response.status_code == status
    assert "error" in response.json()


def test_needs_a_client_key(client: Any, setup: dict[str, Any]) -> None:
    response = client.post("/v1/routing/estimate-cost", data=json.dumps(HELLO), content_type="application/json")
    assert response.status_code == 401


@pytest.fixture
def without_tiktoken_files(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    # a download attempt fails at once instead of reaching for the network
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    import tiktoken.registry

    loaded = dict(tiktoken.registry.ENCODINGS)
    tiktoken.registry.ENCODINGS.clear()  # tiktoken's own in-process cache
    tokens._encodings.clear()
    tokens._failed.clear()
    yield
    tiktoken.registry.ENCODINGS.update(loaded)
    tokens._encodings.clear()
    tokens._failed.clear()


def test_without_encodings_the_approximation_is_used_and_named(
    client: Any, setup: dict[str, Any], without_tiktoken_files: None
) -> None:
    response = _post(client, setup["secret"], HELLO)
    assert response.status_code == 200
    oa = next(c for c in response.json()["candidates"] if c["deployment"] == "oa-gpt-4")
    assert oa["tokenizer"] == "approx-chars/4" and oa["tokenizer_exact"] is False
    assert oa["input_tokens"] == 8 and oa["estimated_cost_usd"] is not None


def test_estimate_does_not_move_round_robin(client: Any, setup: dict[str, Any]) -> None:
    from routing.models import RoutingSettings

    if "balanced" not in __import__("routing.strategies.registry", fromlist=["x"]).strategy_names():
        pytest.skip("no balanced strategy")
    RoutingSettings.objects.filter(pk=1).update(strategy="balanced")
    from gatewaysite.config.changes import config_changed

    config_changed()
    chosen = {_post(client, setup["secret"], HELLO).json()["chosen"] for _ in range(4)}
    assert len(chosen) == 1


def test_seed_curl_example_works_as_written(gateway_url: str, setup: dict[str, Any]) -> None:
    """The seed's example: no content type, a bearer key, a chat body."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"{gateway_url}/v1/routing/estimate-cost",
            "-H",
            f"Authorization: Bearer {setup['secret']}",
            "-d",
            '{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}',
            "-w",
            "\n%{http_code}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    data = json.loads(body)
    assert data["model"] == "gpt-4" and data["chosen"] == "oa-gpt-4"
    assert data["candidates"][0]["input_tokens"] == 7
