"""The openai SDK against a live gateway whose upstream is a loopback Anthropic Messages API."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic, error_event, error_json, message_json, stream_events
from tests.fakes.http_server import Reply

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-ant-e2e-secret"
MODEL = "claude-sonnet"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def fake_provider() -> FakeAnthropic:
    return FakeAnthropic(api_key=KEY)


@pytest.fixture
def secret(
    fake: FakeAnthropic, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> str:
    provider = make_provider("claude", kind="anthropic", base_url=fake.url, api_key=KEY, vendor="anthropic")
    make_deployment(provider, MODEL, provider_model="claude-sonnet-4-5")
    make_price("anthropic", "claude-sonnet-4-5", "3", "15", cached_input_per_mtok="0.30", cache_write_per_mtok="3.75")
    _, secret = issue_key()
    return secret


def test_non_streaming_with_prompt_cache(fake: FakeAnthropic, secret: str, openai_for: Any) -> None:
    fake.queue(
        Reply(json=message_json("Bonjour.", input_tokens=100, output_tokens=50, cache_read=1000, cache_write=200))
    )
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
        max_tokens=64,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 1300
    assert completion.usage.completion_tokens == 50
    assert completion.usage.prompt_tokens_details.cached_tokens == 1000
    # 100 * 3 + 1000 * 0.30 + 200 * 3.75 + 50 * 15 per million
    assert raw.headers["x-gateway-cost-usd"] == "0.0021"
    assert raw.headers["x-gateway-provider"] == "claude"
    sent = fake.received[-1]
    assert sent.headers["x-api-key"] == KEY
    assert sent.body["system"] == [{"type": "text", "text": "Answer in French."}]
    assert sent.body["max_tokens"] == 64
    assert sent.body["model"] == "claude-sonnet-4-5"


def test_streaming(fake: FakeAnthropic, secret: str, openai_for: Any) -> None:
    fake.queue(Reply(events=stream_events(["Hello", " from", " Claude."], input_tokens=20, output_tokens=3)))
    chunks = list(
        openai_for(secret).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Claude."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens == 20 and chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].model_extra["x_gateway"]["cost_usd"] == "0.000105"  # 20 * 3 + 3 * 15 per million
    assert fake.received[-1].body["stream"] is True


def test_tool_call_round_trip(fake: FakeAnthropic, secret: str, openai_for: Any) -> None:
    client = openai_for(secret)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    fake.queue(
        Reply(
            json=message_json(None, tool_uses=[{"id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}])
        )
    )
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required")
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_01A",
        "get_weather",
        {"city": "Paris"},
    )
    assert fake.received[-1].body["tool_choice"] == {"type": "any"}
    assert fake.received[-1].body["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    fake.queue(Reply(json=message_json("It is 18C in Paris.")))
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is 18C in Paris."
    assert fake.received[-1].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A",
                    "content": [{"type": "text", "text": '{"temp_c": 18}'}],
                }
            ],
        },
    ]


def test_streamed_tool_call(fake: FakeAnthropic, secret: str, openai_for: Any) -> None:
    tool = {"id": "toolu_01B", "name": "get_weather", "input": {}, "partial_json": ['{"city"', ': "Ro', 'me"}']}
    fake.queue(Reply(events=stream_events([], tool_uses=[tool])))
    stream = openai_for(secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Rome?"}], tools=TOOLS, stream=True
    )
    ids, names, arguments, finish = [], [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                ids += [delta.id] if delta.id else []
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice.finish_reason or finish
    assert (ids, names, json.loads(arguments), finish) == (
        ["toolu_01B"],
        ["get_weather"],
        {"city": "Rome"},
        "tool_calls",
    )


def test_upstream_errors(fake: FakeAnthropic, secret: str, openai_for: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    client = openai_for(secret)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    fake.queue(Reply(status=529, json=error_json("overloaded_error", f"Overloaded ({KEY})")))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(**body)
    assert info.value.status_code == 502
    assert info.value.body["code"]
    assert KEY not in json.dumps(info.value.body)

    fake.queue(Reply(status=400, json=error_json("invalid_request_error", "prompt is too long")))
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.with_raw_response.create(**body)
    assert "prompt is too long" in bad.value.message
    assert bad.value.response.headers["x-gateway-attempts"] == "1"  # the client's fault: no fallback
    assert caplog.records and KEY not in caplog.text  # nor in the logs


@pytest.mark.parametrize("cut", ["error_event", "connection_closed"])
def test_stream_broken_after_start_reaches_the_client(
    fake: FakeAnthropic, secret: str, openai_for: Any, cut: str
) -> None:
    frames = stream_events(["a", "b"])
    if cut == "error_event":
        fake.queue(Reply(events=[*frames[:4], error_event("overloaded_error", "Overloaded")]))
    else:
        fake.queue(Reply(events=frames, close_after_events=4))
    received: list[str] = []
    with pytest.raises(openai.APIError, match="Overloaded|message_stop|connection|timed out"):
        stream = openai_for(secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        for chunk in stream:
            received += [c.delta.content or "" for c in chunk.choices]
    assert "a" in received  # the client got the start of the answer, then the error


def test_fallback_after_overload(
    fake: FakeAnthropic, secret: str, openai_for: Any, make_provider: Any, make_deployment: Any
) -> None:
    backup = make_provider("claude-backup", kind="anthropic", base_url=fake.url, api_key=KEY, vendor="anthropic")
    make_deployment(backup, MODEL, provider_model="claude-sonnet-4-5", priority=200)
    fake.queue(Reply(status=529, json=error_json("overloaded_error", "Overloaded")))
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from Claude."
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.headers["x-gateway-provider"] == "claude-backup"


def test_unsupported_parameter_is_a_400(fake: FakeAnthropic, secret: str, openai_for: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_for(secret).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2)
    assert "'n'" in info.value.message
    assert fake.received == []
