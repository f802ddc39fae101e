"""The openai SDK against a live gateway whose upstream is a loopback Azure OpenAI resource."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from tests.fakes.azure_server import FakeAzure, azure_stream_events
from tests.fakes.http_server import Reply
from tests.fakes.openai_server import error_json

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "az-e2e-secret"
MODEL = "gpt-4o"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def tool_call_json(call_id: str, arguments: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-az1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
                "content_filter_results": {},
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
    }


@pytest.fixture(scope="module")
def fake_provider() -> FakeAzure:
    return FakeAzure(api_key=KEY)


@pytest.fixture
def secret(
    fake: FakeAzure, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> str:
    provider = make_provider(
        "az", kind="azure", base_url=fake.url, api_key=KEY, vendor="azure", options={"api_version": "2024-10-21"}
    )
    make_deployment(provider, MODEL, provider_model="gpt4o-eastus")
    make_price("azure", "gpt4o-eastus", "2.50", "10")
    _, secret = issue_key()
    return secret


def test_non_streaming(fake: FakeAzure, secret: str, openai_for: Any) -> None:
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from the fake provider."
    assert raw.headers["x-gateway-cost-usd"] == "0.0001"  # 12 * 2.50 + 7 * 10 per million
    sent = fake.received[-1]
    assert sent.path == "/openai/deployments/gpt4o-eastus/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == KEY


def test_streaming(fake: FakeAzure, secret: str, openai_for: Any) -> None:
    fake.queue(Reply(events=azure_stream_events(words=["Hi", " there"])))
    chunks = list(
        openai_for(secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
        )
    )
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"  # no content-filter preamble
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    assert fake.received[-1].body["stream_options"] == {"include_usage": True}


def test_tool_call_round_trip(fake: FakeAzure, secret: str, openai_for: Any) -> None:
    client = openai_for(secret)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    fake.queue(Reply(json=tool_call_json("call_az1", '{"city":"Paris"}')))
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    (call,) = first.choices[0].message.tool_calls
    assert (call.id, json.loads(call.function.arguments)) == ("call_az1", {"city": "Paris"})
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Hello from the fake provider."
    sent = fake.received[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_az1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_az1", "content": "18C"}


def test_upstream_errors(fake: FakeAzure, secret: str, openai_for: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    client = openai_for(secret)
    fake.queue(Reply(status=429, json=error_json(f"Rate limit reached for {KEY}", code="429", type_="")))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert KEY not in json.dumps(info.value.body)
    fake.queue(
        Reply(
            status=400,
            json=error_json(
                "The response was filtered due to the prompt triggering content management policy.",
                code="content_filter",
            ),
        )
    )
    with pytest.raises(openai.BadRequestError, match="content management policy"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True)
    assert caplog.records and KEY not in caplog.text  # nor in the logs
