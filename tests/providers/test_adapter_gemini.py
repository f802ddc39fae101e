"""The Gemini adapter against a loopback server speaking the generateContent wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.adapters.base import Target, UpstreamError
from providers.adapters.gemini import GeminiAdapter
from tests.fakes.gemini_server import FakeGemini, error_json, response_json, sse_frame, stream_events, usage_json
from tests.fakes.http_server import Reply
from tests.providers.adapter_calls import upstream_error

KEY = "gm-test-key"
adapter = GeminiAdapter()


@pytest.fixture(scope="module")
def fake_provider() -> FakeGemini:
    return FakeGemini(api_key=KEY)


def target(fake: FakeGemini, key: str = KEY, **options: Any) -> Target:
    return Target(
        provider="gem", kind="gemini", base_url=fake.url, model="gemini-2.5-flash", api_key=key, options=options
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_request_translation_and_plain_answer(fake: FakeGemini) -> None:
    completion = adapter.complete(
        target(fake),
        {
            "model": "gem",
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("Hi"),
                {"role": "assistant", "content": "Hello!"},
                user([{"type": "text", "text": "How are you?"}]),
            ],
            "temperature": 0.2,
            "top_p": 0.8,
            "max_tokens": 100,
            "stop": ["END"],
            "seed": 3,
            "presence_penalty": 0.5,
            "user": "u-1",
            "metadata": {"x": "y"},
            "parallel_tool_calls": True,
        },
    )
    sent = fake.received[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers and "key=" not in sent.path
    assert sent.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "How are you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.8,
            "seed": 3,
            "presencePenalty": 0.5,
            "maxOutputTokens": 100,
            "stopSequences": ["END"],
        },
    }
    body = completion.body
    assert body["id"] == "chatcmpl-mK9gaM2yL5-Z1dkP4oPn2Qs"
    assert body["model"] == "gemini-2.5-flash"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from Gemini."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


def test_candidate_count_and_json_mode(fake: FakeGemini) -> None:
    fake.queue(Reply(json=response_json("{}", candidates=2)))
    body = adapter.complete(
        target(fake),
        {
            "model": "m",
            "messages": [user("a")],
            "n": 2,
            "max_completion_tokens": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        },
    ).body
    config = fake.received[-1].body["generationConfig"]
    assert config == {
        "maxOutputTokens": 7,
        "candidateCount": 2,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert [c["index"] for c in body["choices"]] == [0, 1]


def test_usage_thoughts_count_as_completion_and_cache_as_cached(fake: FakeGemini) -> None:
    fake.queue(Reply(json=response_json(prompt=1000, output=50, cached=800, thoughts=200)))
    completion = adapter.complete(target(fake), {"model": "m", "messages": [user("a")]})
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.cached_tokens) == (
        1000,
        250,
        800,
    )


def test_tool_round_trip_request(fake: FakeGemini) -> None:
    messages = [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1__thought__c2lnbmF0dXJl",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1__thought__c2lnbmF0dXJl", "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
    ]
    adapter.complete(
        target(fake),
        {
            "model": "m",
            "messages": messages,
            "tools": [
                WEATHER_TOOL,
                {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )
    body = fake.received[-1].body
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnbmF0dXJl",
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                },
                {"name": "now"},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
def test_tool_choice_modes(fake: FakeGemini, choice: str, mode: str) -> None:
    adapter.complete(
        target(fake), {"model": "m", "messages": [user("a")], "tools": [WEATHER_TOOL], "tool_choice": choice}
    )
    assert fake.received[-1].body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_images(fake: FakeGemini) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png?x=1"}},
    ]
    adapter.complete(target(fake), {"model": "m", "messages": [user(content)]})
    assert fake.received[-1].body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png?x=1"}},
    ]


def test_function_call_answer(fake: FakeGemini) -> None:
    fake.queue(
        Reply(
            json=response_json(
                None, function_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "thoughtSignature": "sig=="}]
            )
        )
    )
    choice = adapter.complete(target(fake), {"model": "m", "messages": [user("a")], "tools": [WEATHER_TOOL]}).body[
        "choices"
    ][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert call["id"].startswith("call_") and call["id"].endswith("__thought__sig==")


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter")],
)
def test_finish_reasons(fake: FakeGemini, reason: str, finish: str) -> None:
    fake.queue(Reply(json=response_json(finish_reason=reason)))
    assert (
        adapter.complete(target(fake), {"model": "m", "messages": [user("a")]}).body["choices"][0]["finish_reason"]
        == finish
    )


def test_blocked_prompt(fake: FakeGemini) -> None:
    fake.queue(
        Reply(
            json={
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
            }
        )
    )
    completion = adapter.complete(target(fake), {"model": "m", "messages": [user("a")]})
    assert completion.body["choices"][0]["finish_reason"] == "content_filter"
    assert completion.usage is not None and completion.usage.prompt_tokens == 5


def test_stream_text(fake: FakeGemini) -> None:
    fake.queue(Reply(events=stream_events(["Hel", "lo"], prompt=20, thoughts=3)))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")], "stream": True}))
    sent = fake.received[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert "stream" not in sent.body
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-stream-resp-1" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == {
        **chunks[-1],
        "choices": [],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


def test_stream_function_calls(fake: FakeGemini) -> None:
    calls = [{"name": "get_weather", "args": {"city": "Paris"}}, {"name": "get_weather", "args": {"city": "Rome"}}]
    fake.queue(Reply(events=stream_events(["Checking."], function_calls=calls)))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")], "tools": [WEATHER_TOOL]}))
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert [d["index"] for d in deltas] == [0, 1]
    assert [json.loads(d["function"]["arguments"]) for d in deltas] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(d["id"] and d["type"] == "function" and d["function"]["name"] == "get_weather" for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_stream_error_mid_stream(fake: FakeGemini) -> None:
    frames = stream_events(["a", "b", "c"])
    fake.queue(Reply(events=[frames[0], sse_frame(error_json(503, "UNAVAILABLE", "The model is overloaded."))]))
    stream = adapter.stream(target(fake), {"model": "m", "messages": [user("a")]})
    assert next(stream)["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(UpstreamError) as info:
        list(stream)
    assert info.value.retryable and info.value.status == 502


def test_stream_without_finish_is_an_error(fake: FakeGemini) -> None:
    fake.queue(Reply(events=stream_events(["a", "b", "c"])[:2]))
    with pytest.raises(UpstreamError, match="finish reason"):
        list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")]}))


@pytest.mark.parametrize(
    ("status", "google_status", "client_status", "retryable", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, False, "invalid_request"),
        (403, "PERMISSION_DENIED", 502, False, "upstream_auth_failed"),
        (429, "RESOURCE_EXHAUSTED", 429, True, "rate_limit_exceeded"),
        (500, "INTERNAL", 502, True, "upstream_error"),
        (503, "UNAVAILABLE", 502, True, "upstream_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_http_errors(
    fake: FakeGemini, status: int, google_status: str, client_status: int, retryable: bool, code: str, stream: bool
) -> None:
    fake.queue(Reply(status=status, json=error_json(status, google_status, f"failed ({KEY})")))
    error = upstream_error(adapter, target(fake), {"model": "m", "messages": [user("a")]}, stream=stream)
    assert (error.status, error.retryable, error.code, error.upstream_status) == (
        client_status,
        retryable,
        code,
        status,
    )
    assert KEY not in error.message


def test_invalid_key_is_an_auth_failure_not_a_client_error(fake: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.complete(target(fake, key="gm-wrong"), {"model": "m", "messages": [user("a")]})
    error = info.value
    assert (error.status, error.code, error.client_error, error.retryable) == (
        502,
        "upstream_auth_failed",
        False,
        False,
    )
    assert "gm-wrong" not in error.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"function_call": "auto"}, "function_call"),
        ({"messages": [user([{"type": "file", "file": {}}])]}, "messages"),
    ],
)
def test_unsupported_parameters_are_rejected(fake: FakeGemini, extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [user("a")], **extra}
    for stream in (False, True):
        error = upstream_error(adapter, target(fake), body, stream=stream)
        assert (error.status, error.code, error.client_error) == (400, "unsupported_parameter", True)
        assert f"'{param}'" in error.message
    assert fake.received == []


def test_tool_result_without_call_is_a_client_error(fake: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter.complete(
            target(fake), {"model": "m", "messages": [user("a"), {"role": "tool", "tool_call_id": "x", "content": "1"}]}
        )
    assert info.value.status == 400 and info.value.client_error


def test_stream_blocked_prompt(fake: FakeGemini) -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": usage_json(prompt=4, output=0)}
    fake.queue(Reply(events=[sse_frame(blocked)]))
    chunks = list(adapter.stream(target(fake), {"model": "m", "messages": [user("a")]}))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, "content_filter"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 4
