"""The Anthropic adapter against a loopback server speaking the Messages API wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.adapters.anthropic import AnthropicAdapter
from providers.adapters.base import Target, UpstreamError
from tests.fakes.anthropic_server import FakeAnthropic, error_event, error_json, message_json, stream_events
from tests.fakes.http_server import Reply
from tests.providers.adapter_calls import upstream_error

KEY = "sk-ant-test"
adapter = AnthropicAdapter()


@pytest.fixture(scope="module")
def fake_provider() -> FakeAnthropic:
    return FakeAnthropic(api_key=KEY)


def target(fake: FakeAnthropic, **options: Any) -> Target:
    return Target(
        provider="claude", kind="anthropic", base_url=fake.url, model="claude-sonnet-4-5", api_key=KEY, options=options
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_request_translation_and_plain_answer(fake: FakeAnthropic) -> None:
    completion = adapter.complete(
        target(fake),
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
                user("Hi"),
            ],
            "stop": "END",
            "temperature": 0.3,
            "top_p": 0.9,
            "user": "user-42",
            "seed": 7,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "metadata": {"a": "b"},
            "store": True,
        },
    )
    sent = fake.received[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4096,  # GATEWAY["ANTHROPIC_DEFAULT_MAX_TOKENS"]
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }
    body = completion.body
    assert body["object"] == "chat.completion"
    assert body["model"] == "claude-sonnet-4-5"  # the model the provider reports
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from Claude."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert completion.usage is not None and completion.usage.prompt_tokens == 12


def test_max_tokens_version_and_default(fake: FakeAnthropic, settings: Any) -> None:
    settings.GATEWAY = {**settings.GATEWAY, "ANTHROPIC_DEFAULT_MAX_TOKENS": 333}
    adapter.complete(target(fake), {"model": "m", "messages": [user("a")]})
    assert fake.received[-1].body["max_tokens"] == 333
    adapter.complete(target(fake), {"model": "m", "messages": [user("a")], "max_tokens": 50})
    assert fake.received[-1].body["max_tokens"] == 50
    adapter.complete(
        target(fake, anthropic_version="2024-01-01", anthropic_beta="prompt-caching-2024-07-31"),
        {"model": "m", "messages": [user("a")], "max_completion_tokens": 60, "stop": ["x", "y"]},
    )
    sent = fake.received[-1]
    assert sent.body["max_tokens"] == 60
    assert sent.body["stop_sequences"] == ["x", "y"]
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"


def test_tool_round_trip_request_merges_roles(fake: FakeAnthropic) -> None:
    messages = [
        user("Weather in Paris and Rome?"),
        user([{"type": "text", "text": "Quickly.", "cache_control": {"type": "ephemeral"}}]),
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
        user("Thanks"),
    ]
    adapter.complete(
        target(fake),
        {
            "model": "m",
            "messages": messages,
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
    )
    body = fake.received[-1].body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "text", "text": "Quickly.", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
            "description": "Weather in a city",
        }
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice(fake: FakeAnthropic, choice: Any, expected: dict[str, Any]) -> None:
    adapter.complete(
        target(fake), {"model": "m", "messages": [user("a")], "tools": [WEATHER_TOOL], "tool_choice": choice}
    )
    assert fake.received[-1].body["tool_choice"] == expected


def test_images(fake: FakeAnthropic) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    adapter.complete(target(fake), {"model": "m", "messages": [user(content)]})  # type: ignore[arg-type]
    assert fake.received[-1].body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_use_answer(fake: FakeAnthropic) -> None:
    fake.queue(
        Reply(
            json=message_json(
                "I'll check.", tool_uses=[{"id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}]
            )
        )
    )
    body = adapter.complete(target(fake), {"model": "m", "messages": [user("Oslo?")], "tools": [WEATHER_TOOL]}).body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    ]
    fake.queue(Reply(json=message_json(None, tool_uses=[{"id": "t", "name": "get_weather", "input": {}}])))
    message = adapter.complete(target(fake), {"model": "m", "messages": [user("x")]}).body["choices"][0]["message"]
    assert message["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("end_turn", "stop"), ("refusal", "content_filter")],
)
def test_finish_reasons(fake: FakeAnthropic, stop_reason: str, finish: str) -> None:
    fake.queue(Reply(json=message_json(stop_reason=stop_reason)))
    assert (
        adapter.complete(target(fake), {"model": "m", "messages": [user("a")]}).body["choices"][0]["finish_reason"]
        == finish
    )


def test_cache_usage_counts_in_prompt_tokens(fake: FakeAnthropic) -> None:
    fake.queue(Reply(json=message_json(input_tokens=100, output_tokens=20, cache_read=1000, cache_write=50)))
    completion = adapter.complete(target(fake), {"model": "m", "messages": [user("a")]})
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.cached_tokens, completion.usage.cache_creation_tokens) == (
        1150,
        1000,
        50,
    )
    assert completion.body["usage"] == {
        "prompt_tokens": 1150,
        "completion_tokens": 20,
        "total_tokens": 1170,
        "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 50},
    }


def test_stream_text(fake: FakeAnthropic) -> None:
    fake.queue(Reply(events=stream_events(["Hel", "lo"], input_tokens=30, output_tokens=4, cache_read=10)))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")], "stream": True}))
    sent = fake.received[-1].body
    assert sent["stream"] is True and "stream_options" not in sent
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01StreamStreamStream" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 4,
        "total_tokens": 44,
        "prompt_tokens_details": {"cached_tokens": 10, "cache_creation_tokens": 0},
    }


def test_stream_tool_calls(fake: FakeAnthropic) -> None:
    tools = [
        {
            "id": "toolu_a",
            "name": "get_weather",
            "input": {"city": "Paris"},
            "partial_json": ['{"ci', 'ty": "Par', 'is"}'],
        },
        {"id": "toolu_b", "name": "get_time", "input": {}, "partial_json": ["{}"]},
    ]
    fake.queue(Reply(events=stream_events(["Checking."], tool_uses=tools)))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")], "tools": [WEATHER_TOOL]}))
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert deltas[0] == {
        "index": 0,
        "id": "toolu_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [d["function"]["arguments"] for d in deltas if d["index"] == 0][1:] == ['{"ci', 'ty": "Par', 'is"}']
    assert json.loads("".join(d["function"]["arguments"] for d in deltas if d["index"] == 0)) == {"city": "Paris"}
    assert deltas[-2]["id"] == "toolu_b" and deltas[-2]["index"] == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_stream_error_event_mid_stream(fake: FakeAnthropic) -> None:
    frames = stream_events(["a", "b", "c"])
    fake.queue(Reply(events=[*frames[:4], error_event("overloaded_error", "Overloaded")]))
    stream = adapter.stream(target(fake), {"model": "m", "messages": [user("a")]})
    first = next(stream)
    assert first["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(UpstreamError) as info:
        list(stream)
    assert info.value.retryable and info.value.status == 502 and info.value.code == "upstream_overloaded"


def test_stream_error_event_invalid_request_is_not_retried(fake: FakeAnthropic) -> None:
    fake.queue(Reply(events=[error_event("invalid_request_error", "prompt is too long")]))
    with pytest.raises(UpstreamError) as info:
        next(adapter.stream(target(fake), {"model": "m", "messages": [user("a")]}))
    assert not info.value.retryable and info.value.status == 400


def test_stream_cut_short_is_an_error(fake: FakeAnthropic) -> None:
    fake.queue(Reply(events=stream_events(["a", "b"])[:-2]))
    with pytest.raises(UpstreamError, match="before message_stop"):
        list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")]}))


@pytest.mark.parametrize(
    ("status", "error_type", "client_status", "retryable", "code"),
    [
        (400, "invalid_request_error", 400, False, "invalid_request"),
        (401, "authentication_error", 502, False, "upstream_auth_failed"),
        (403, "permission_error", 502, False, "upstream_auth_failed"),
        (429, "rate_limit_error", 429, True, "rate_limit_exceeded"),
        (500, "api_error", 502, True, "upstream_error"),
        (529, "overloaded_error", 502, True, "upstream_overloaded"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_http_errors(
    fake: FakeAnthropic, status: int, error_type: str, client_status: int, retryable: bool, code: str, stream: bool
) -> None:
    fake.queue(Reply(status=status, json=error_json(error_type, f"failed for key {KEY}")))
    error = upstream_error(adapter, target(fake), {"model": "m", "messages": [user("a")]}, stream=stream)
    assert (error.status, error.retryable, error.code, error.upstream_status) == (
        client_status,
        retryable,
        code,
        status,
    )
    assert KEY not in error.message and KEY not in str(error)


def test_wrong_key_is_an_auth_failure(fake: FakeAnthropic) -> None:
    wrong = Target(provider="claude", kind="anthropic", base_url=fake.url, model="m", api_key="sk-ant-wrong")
    with pytest.raises(UpstreamError) as info:
        adapter.complete(wrong, {"model": "m", "messages": [user("a")]})
    assert info.value.code == "upstream_auth_failed" and not info.value.retryable


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "messages"),  # type: ignore[list-item]
    ],
)
def test_unsupported_parameters_are_rejected(fake: FakeAnthropic, extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [user("a")], **extra}
    for stream in (False, True):
        error = upstream_error(adapter, target(fake), body, stream=stream)
        assert (error.status, error.code, error.client_error, error.retryable) == (
            400,
            "unsupported_parameter",
            True,
            False,
        )
        assert f"'{param}'" in error.message
    assert fake.received == []


def test_accepted_no_ops(fake: FakeAnthropic) -> None:
    adapter.complete(
        target(fake),
        {"model": "m", "messages": [user("a")], "n": 1, "logprobs": False, "response_format": {"type": "text"}},
    )
    assert set(fake.received[-1].body) == {"model", "messages", "max_tokens"}


def test_bad_tool_arguments_are_a_client_error(fake: FakeAnthropic) -> None:
    messages = [
        user("a"),
        {
            "role": "assistant",
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{"}}],
        },
    ]
    with pytest.raises(UpstreamError) as info:
        adapter.complete(target(fake), {"model": "m", "messages": messages})
    assert info.value.status == 400 and info.value.client_error


def test_fake_speaks_anthropics_wire_format(fake: FakeAnthropic) -> None:
    """The official anthropic SDK, pointed at the fake, parses its answers and streams."""
    import anthropic

    client = anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0)
    fake.queue(Reply(json=message_json("Hi.", tool_uses=[{"id": "toolu_1", "name": "f", "input": {"a": 1}}])))
    message = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "a"}])
    assert message.stop_reason == "tool_use" and message.content[1].input == {"a": 1}
    tool = {"id": "toolu_2", "name": "f", "input": {}, "partial_json": ['{"a"', ": 2}"]}
    fake.queue(Reply(events=stream_events(["Hel", "lo"], tool_uses=[tool], cache_read=5)))
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "a"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Hello" and final.content[1].input == {"a": 2}
    assert final.usage.cache_read_input_tokens == 5 and final.stop_reason == "tool_use"
    with pytest.raises(anthropic.RateLimitError):
        fake.queue(Reply(status=429, json=error_json("rate_limit_error", "slow down")))
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "a"}])


@pytest.mark.parametrize(
    ("client_id", "anthropic_id"),
    [("call_3f9a__thought__CiQB0e2+Kb/x==", "call_3f9a"), ("call.1", "call_1"), ("toolu_01A", "toolu_01A")],
)
def test_tool_ids_from_other_providers_are_made_acceptable(
    fake: FakeAnthropic, client_id: str, anthropic_id: str
) -> None:
    messages = [
        user("a"),
        {"role": "assistant", "tool_calls": [{"id": client_id, "type": "function", "function": {"name": "f"}}]},
        {"role": "tool", "tool_call_id": client_id, "content": "1"},
    ]
    adapter.complete(target(fake), {"model": "m", "messages": messages})
    sent = fake.received[-1].body["messages"]
    assert sent[1]["content"][0]["id"] == sent[2]["content"][0]["tool_use_id"] == anthropic_id


def test_stalled_stream_times_out_and_may_fall_back(fake: FakeAnthropic) -> None:
    stalled = Target(provider="claude", kind="anthropic", base_url=fake.url, model="m", api_key=KEY, read_timeout=0.2)
    fake.queue(Reply(events=stream_events(["a"]), event_delay=0.6))
    with pytest.raises(UpstreamError) as info:
        next(adapter.stream(stalled, {"model": "m", "messages": [user("a")]}))
    assert (info.value.status, info.value.code, info.value.retryable) == (504, "upstream_timeout", True)


def _with_cache_split(data: dict[str, Any], five_minutes: int, one_hour: int) -> dict[str, Any]:
    data["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": five_minutes, "ephemeral_1h_input_tokens": one_hour}
    return data


def test_one_hour_cache_writes_are_told_apart(fake: FakeAnthropic) -> None:
    # Anthropic bills a 1-hour cache write at 2x input and a 5-minute one at 1.25x: keep the split
    data = _with_cache_split(message_json(input_tokens=100, output_tokens=20, cache_read=1000, cache_write=70), 50, 20)
    fake.queue(Reply(json=data))
    completion = adapter.complete(target(fake), {"model": "m", "messages": [user("a")]})
    assert completion.usage is not None
    assert (completion.usage.cache_creation_tokens, completion.usage.cache_creation_1h_tokens) == (70, 20)
    assert completion.body["usage"]["prompt_tokens"] == 1170
    assert completion.body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1000,
        "cache_creation_tokens": 70,
        "cache_creation_1h_tokens": 20,
    }
    # only the split, no total: the total is the sum of the parts
    data = _with_cache_split(message_json(input_tokens=10, output_tokens=1), 3, 4)
    del data["usage"]["cache_creation_input_tokens"]
    fake.queue(Reply(json=data))
    usage = adapter.complete(target(fake), {"model": "m", "messages": [user("a")]}).usage
    assert usage is not None and (usage.prompt_tokens, usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (
        17,
        7,
        4,
    )


def test_stream_keeps_the_one_hour_cache_writes(fake: FakeAnthropic) -> None:
    frames = stream_events(["Hi"], input_tokens=30, output_tokens=4, cache_write=40)
    event, _, data = frames[0].decode().partition("\ndata: ")
    start = json.loads(data)
    start["message"]["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 25}
    frames[0] = f"{event}\ndata: {json.dumps(start)}\n\n".encode()
    fake.queue(Reply(events=frames))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")], "stream": True}))
    details = chunks[-1]["usage"]["prompt_tokens_details"]
    assert details == {"cached_tokens": 0, "cache_creation_tokens": 40, "cache_creation_1h_tokens": 25}
