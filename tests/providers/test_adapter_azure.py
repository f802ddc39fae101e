"""The Azure OpenAI adapter against a loopback server speaking Azure's wire format."""

from __future__ import annotations

from typing import Any

import pytest

from providers.adapters.azure import AzureOpenAIAdapter
from providers.adapters.base import Target, UpstreamError
from tests.fakes.azure_server import FakeAzure
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import error_json

KEY = "az-test-key"
adapter = AzureOpenAIAdapter()


@pytest.fixture(scope="module")
def fake_provider() -> FakeAzure:
    return FakeAzure(api_key=KEY)


def target(fake: FakeAzure, key: str = KEY, **options: Any) -> Target:
    return Target(
        provider="az", kind="azure", base_url=fake.url + "/", model="gpt4o-prod", api_key=key, options=options
    )


BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "seed": 1, "user": "u"}


def test_complete_uses_deployment_url_version_and_api_key(fake: FakeAzure) -> None:
    completion = adapter.complete(target(fake), BODY)
    sent = fake.received[-1]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.body == {**BODY, "model": "gpt4o-prod"}  # OpenAI's body, unchanged
    assert completion.body["choices"][0]["message"]["content"] == "Hello from the fake provider."
    assert completion.usage is not None and completion.usage.prompt_tokens == 12
    adapter.complete(target(fake, api_version="2025-01-01-preview"), BODY)
    assert fake.received[-1].path.endswith("?api-version=2025-01-01-preview")


def test_stream_drops_content_filter_preamble_and_asks_for_usage(fake: FakeAzure) -> None:
    chunks = list(adapter.stream(target(fake), {**BODY, "stream": True}))
    assert fake.received[-1].body["stream_options"] == {"include_usage": True}
    assert all(c["choices"] or c.get("usage") for c in chunks)
    assert "prompt_filter_results" not in chunks[0]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
        "Hello from the stream."
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("status", "client_status", "retryable"), [(400, 400, False), (401, 502, False), (429, 429, True), (503, 502, True)]
)
def test_errors(fake: FakeAzure, status: int, client_status: int, retryable: bool) -> None:
    fake.queue(Reply(status=status, json=error_json(f"failed with {KEY}")))
    with pytest.raises(UpstreamError) as info:
        adapter.complete(target(fake), BODY)
    assert (info.value.status, info.value.retryable) == (client_status, retryable)
    assert KEY not in info.value.message


def test_wrong_key(fake: FakeAzure) -> None:
    with pytest.raises(UpstreamError) as info:
        next(adapter.stream(target(fake, key="az-wrong"), {**BODY, "stream": True}))
    assert info.value.code == "upstream_auth_failed" and not info.value.retryable
