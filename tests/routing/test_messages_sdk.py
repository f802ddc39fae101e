"""``POST /v1/messages`` with the official anthropic SDK against a live gateway.

Behind the gateway: a loopback Anthropic Messages API (served natively, the body passed
through) and a loopback OpenAI-compatible API (served translated), plain, streaming and
with tools; errors in Anthropic's shape; ``count_tokens`` from the gateway's own count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest
import requests

from tests.fakes.anthropic_server import FakeAnthropic, error_event, message_json, stream_events
from tests.fakes.anthropic_server import error_json as anthropic_error
from tests.fakes.http_server import Reply, sse
from tests.fakes.openai_server import completion_json, error_json
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-ant-upstream"
CLAUDE = "claude-sonnet"
GPT = "gpt-4o-mini"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def _records() -> list[UsageRecord]:
    drain(claim_idle_ms=0)
    return list(UsageRecord.objects.order_by("created_at"))


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def routes(
    fake_anthropic: FakeAnthropic,
    make_openai_route: Any,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    redis_client: Any,
) -> dict[str, Any]:
    claude = make_provider("claude", kind="anthropic", base_url=fake_anthropic.url, api_key=KEY, vendor="anthropic")
    make_deployment(claude, CLAUDE, provider_model="claude-sonnet-4-5")
    make_price("anthropic", "claude-sonnet-4-5", "3", "15", cached_input_per_mtok="0.30", cache_write_per_mtok="3.75")
    openai_side = make_openai_route(GPT, "0.15", "0.60")
    return {"secret": openai_side["secret"], "anthropic": fake_anthropic, "openai": openai_side["fake"]}


@pytest.fixture
def client(routes: dict[str, Any], gateway_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=routes["secret"], base_url=gateway_url, max_retries=0)


# --- Anthropic deployments: native ---------------------------------------------------------


def test_native_passes_caching_and_thinking_through(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    answer = message_json("Bonjour.", input_tokens=100, output_tokens=50, cache_read=1000, cache_write=200)
    answer["content"].insert(0, {"type": "thinking", "thinking": "French, then.", "signature": "sig-abc"})
    routes["anthropic"].queue(Reply(json=answer))
    raw = client.messages.with_raw_response.create(
        model=CLAUDE,
        max_tokens=1024,
        system=[{"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}],
        thinking={"type": "enabled", "budget_tokens": 512},
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"anthropic-beta": "extended-cache-ttl-2025-04-11"},
    )
    message = raw.parse()
    assert message.content[0].type == "thinking" and message.content[0].signature == "sig-abc"
    assert message.content[1].text == "Bonjour."
    assert message.usage.cache_read_input_tokens == 1000
    sent = routes["anthropic"].received[-1]
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 512}
    assert raw.headers["x-gateway-deployment"] == "claude-claude-sonnet"
    # 100 * 3 + 1000 * 0.30 + 200 * 3.75 + 50 * 15 per million
    assert raw.headers["x-gateway-cost-usd"] == "0.0021"
    (record,) = _records()
    assert record.endpoint == "messages" and record.cached_tokens == 1000 and record.cache_creation_tokens == 200
    assert record.cost_usd == Decimal("0.0021")


def test_native_with_bearer_token(routes: dict[str, Any], gateway_url: str) -> None:
    client = anthropic.Anthropic(auth_token=routes["secret"], base_url=gateway_url, max_retries=0)
    message = client.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == "Hello from Claude."
    assert routes["anthropic"].received[-1].headers["x-api-key"] == KEY  # the provider's key, not the client's


def test_native_stream_events_pass_through(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    routes["anthropic"].queue(Reply(events=stream_events(["Bon", "jour."], input_tokens=20, output_tokens=4)))
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hello"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert final.content[0].text == "Bonjour."
    assert final.usage.output_tokens == 4
    assert routes["anthropic"].received[-1].body["stream"] is True
    (record,) = _records()
    assert record.stream and record.status == "ok" and record.prompt_tokens == 20 and record.completion_tokens == 4


def test_native_tool_use(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    call = {"id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
    routes["anthropic"].queue(Reply(json=message_json(None, tool_uses=[call])))
    message = client.messages.create(
        model=CLAUDE, max_tokens=64, tools=TOOLS, messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    assert message.stop_reason == "tool_use"
    assert message.content[0].input == {"city": "Paris"}
    follow_up = client.messages.create(
        model=CLAUDE,
        max_tokens=64,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [c.model_dump() for c in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"}]},
        ],
    )
    assert follow_up.content[0].text == "Hello from Claude."
    assert routes["anthropic"].received[-1].body["messages"][2]["content"][0]["tool_use_id"] == "toolu_01A"


def test_native_upstream_error_in_anthropic_shape(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    routes["anthropic"].queue(Reply(status=429, json=anthropic_error("rate_limit_error", "slow down")))
    with pytest.raises(anthropic.RateLimitError) as error:
        client.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert error.value.body["type"] == "error"
    assert error.value.body["error"]["type"] == "rate_limit_error"


def test_native_stream_cut_ends_with_an_error_event(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    frames = stream_events(["Hel", "lo"])
    routes["anthropic"].queue(Reply(events=[*frames[:4], error_event("overloaded_error", "Overloaded")]))
    request = {"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(anthropic.APIStatusError), client.messages.stream(**request) as stream:
        for _ in stream:
            pass
    (record,) = _records()
    assert record.status == "error" and record.stream and record.usage_estimated


# --- OpenAI-format deployments: translated --------------------------------------------------


def test_translated_plain_with_system_and_image(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model=GPT,
        max_tokens=100,
        system="Be brief.",
        extra_body={"temperature": 0.5},
        stop_sequences=["END"],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == GPT
    assert message.content[0].text == "Hello from the fake provider."
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 7
    sent = routes["openai"].received[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    assert sent["max_tokens"] == 100 and sent["temperature"] == 0.5 and sent["stop"] == ["END"]
    assert raw.headers["x-gateway-cost-usd"] == "0.000006"
    (record,) = _records()
    assert record.endpoint == "messages" and record.provider == "up" and record.cost_usd == Decimal("0.000006")


def test_translated_stream_event_sequence(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=GPT, max_tokens=64, messages=[{"role": "user", "content": "Hello"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    raw_kinds = [k for k in kinds if k not in ("text",)]  # the SDK adds its own "text" convenience events
    assert raw_kinds[0] == "message_start"
    assert raw_kinds[1] == "content_block_start"
    assert raw_kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text == "Hello from the stream."
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 12
    assert final.stop_reason == "end_turn"
    (record,) = _records()
    assert record.stream and record.endpoint == "messages" and record.completion_tokens == 4


def _tool_call_completion() -> dict[str, Any]:
    body = completion_json()
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def test_translated_tool_use_round_trip(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    routes["openai"].queue(Reply(json=_tool_call_completion()))
    message = client.messages.create(
        model=GPT,
        max_tokens=64,
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    (tool_use,) = message.content
    assert tool_use.type == "tool_use" and tool_use.id == "call_1" and tool_use.input == {"city": "Paris"}
    sent = routes["openai"].received[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False

    client.messages.create(
        model=GPT,
        max_tokens=64,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [c.model_dump() for c in message.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    sent = routes["openai"].received[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    assert sent[3] == {"role": "user", "content": "And tomorrow?"}


def test_translated_streamed_tool_use(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    base = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": int(time.time()), "model": GPT}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    frames = [
        chunk({"role": "assistant", "content": "Let me check."}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        sse({**base, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}),
        b"data: [DONE]\n\n",
    ]
    routes["openai"].queue(Reply(events=frames))
    with client.messages.stream(
        model=GPT, max_tokens=64, tools=TOOLS, messages=[{"role": "user", "content": "Weather in Oslo?"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert final.content[1].id == "call_9" and final.content[1].input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 9


def test_translated_refuses_what_only_anthropic_can_do(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as error:
        client.messages.create(
            model=GPT,
            max_tokens=64,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
                        {"type": "text", "text": "Summarise"},
                    ],
                }
            ],
        )
    assert error.value.body["error"]["type"] == "invalid_request_error"
    assert "document" in error.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model=GPT,
            max_tokens=64,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "news?"}],
        )
    assert routes["openai"].received == []


def test_translated_upstream_error(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    routes["openai"].queue(Reply(status=400, json=error_json("bad thing", code="invalid")))
    with pytest.raises(anthropic.BadRequestError) as error:
        client.messages.create(model=GPT, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert error.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": "up: bad thing"}}


def test_fallback_from_anthropic_to_openai_translated(
    routes: dict[str, Any], client: anthropic.Anthropic, make_provider: Any, make_deployment: Any
) -> None:
    """One model on both wire formats: an overloaded Anthropic deployment falls back to the OpenAI one."""
    up = make_provider("up2", base_url=routes["openai"].url + "/v1", vendor="openai")
    make_deployment(up, CLAUDE, provider_model=GPT, priority=200)
    routes["anthropic"].queue(Reply(status=529, json=anthropic_error("overloaded_error", "Overloaded")))
    raw = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    )
    assert raw.parse().content[0].text == "Hello from the fake provider."
    assert raw.headers["x-gateway-provider"] == "up2" and raw.headers["x-gateway-attempts"] == "2"


# --- errors and count_tokens -------------------------------------------------------------------


def test_gateway_errors_in_anthropic_shape(
    routes: dict[str, Any], client: anthropic.Anthropic, gateway_url: str
) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="nope", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert not_found.value.body["error"]["type"] == "not_found_error"
    bad_key = anthropic.Anthropic(api_key="gw-wrong", base_url=gateway_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        bad_key.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert unauthenticated.value.body["type"] == "error"
    assert unauthenticated.value.body["error"]["type"] == "authentication_error"
    response = requests.post(
        gateway_url + "/v1/messages",
        json={"model": CLAUDE, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"x-api-key": routes["secret"]},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required (a positive integer)."},
    }
    broken = requests.post(
        gateway_url + "/v1/messages", data=b"{not json", headers={"x-api-key": routes["secret"]}, timeout=10
    )
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert routes["anthropic"].received == [] and routes["openai"].received == []


def test_count_tokens(routes: dict[str, Any], client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "Hi"}])
    longer = client.messages.count_tokens(
        model=CLAUDE, system="You are terse.", tools=TOOLS, messages=[{"role": "user", "content": "Hi " * 50}]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert routes["anthropic"].received == []
