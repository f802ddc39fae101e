"""The openai SDK against a live gateway whose upstream is a loopback Gemini API."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
import pytest

from tests.fakes.gemini_server import FakeGemini, error_json, response_json, sse_frame, stream_events
from tests.fakes.http_server import Reply

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "gm-e2e-secret"
MODEL = "gemini-flash"
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
def fake_provider() -> FakeGemini:
    return FakeGemini(api_key=KEY)


@pytest.fixture
def secret(
    fake: FakeGemini, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> str:
    provider = make_provider("gem", kind="gemini", base_url=fake.url, api_key=KEY, vendor="google")
    make_deployment(provider, MODEL, provider_model="gemini-2.5-flash")
    make_price("google", "gemini-2.5-flash", "0.30", "2.50", cached_input_per_mtok="0.075")
    _, secret = issue_key()
    return secret


def test_non_streaming_with_thoughts_and_cache(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    fake.queue(Reply(json=response_json("Bonjour.", prompt=1000, output=40, cached=800, thoughts=60)))
    raw = openai_for(secret).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
        max_tokens=64,
        temperature=0.5,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1000, 100)
    assert completion.usage.prompt_tokens_details.cached_tokens == 800
    # 200 * 0.30 + 800 * 0.075 + 100 * 2.50 per million
    assert raw.headers["x-gateway-cost-usd"] == "0.00037"
    sent = fake.received[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Answer in French."}]}
    assert sent.body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 64}


def test_streaming(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    fake.queue(Reply(events=stream_events(["Hello", " from", " Gemini."], prompt=20)))
    chunks = list(
        openai_for(secret).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Gemini."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (20, 3)
    assert chunks[-1].model_extra["x_gateway"]["cost_usd"] == "0.0000135"  # 20 * 0.30 + 3 * 2.50 per million
    assert fake.received[-1].path.endswith(":streamGenerateContent?alt=sse")


def test_tool_call_round_trip(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    client = openai_for(secret)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    fake.queue(
        Reply(
            json=response_json(
                None,
                function_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "thoughtSignature": "CiQB0e2Kb"}],
            )
        )
    )
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required")
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert fake.received[-1].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    fake.queue(Reply(json=response_json("It is 18C in Paris.")))
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is 18C in Paris."
    assert fake.received[-1].body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQB0e2Kb"}
            ],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}}]},
    ]


def test_streamed_tool_call(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    fake.queue(Reply(events=stream_events([], function_calls=[{"name": "get_weather", "args": {"city": "Rome"}}])))
    stream = openai_for(secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Rome?"}], tools=TOOLS, stream=True
    )
    calls, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    (call,) = calls
    assert call.id and call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome"}
    assert finish == "tool_calls"


def test_upstream_errors(fake: FakeGemini, secret: str, openai_for: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    client = openai_for(secret)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    fake.queue(Reply(status=429, json=error_json(429, "RESOURCE_EXHAUSTED", f"Quota exceeded for {KEY}")))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(**body)
    assert KEY not in json.dumps(info.value.body)

    fake.queue(Reply(status=503, json=error_json(503, "UNAVAILABLE", "The model is overloaded.")))
    with pytest.raises(openai.InternalServerError) as server_error:
        client.chat.completions.create(**body, stream=True)
    assert server_error.value.status_code == 502

    fake.queue(Reply(status=400, json=error_json(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**body)
    assert caplog.records and KEY not in caplog.text  # nor in the logs


def test_stream_error_after_start_reaches_the_client(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    frames = stream_events(["a", "b", "c"])
    fake.queue(Reply(events=[frames[0], sse_frame(error_json(500, "INTERNAL", "An internal error has occurred."))]))
    with pytest.raises(openai.APIError, match="internal error"):
        list(
            openai_for(secret).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )


def test_wrong_key_is_a_gateway_fault_not_the_clients(
    fake: FakeGemini, secret: str, openai_for: Any, make_provider: Any
) -> None:
    from gatewaysite.config.changes import config_changed
    from providers.models import Provider

    Provider.objects.filter(name="gem").update(api_key="gm-wrong-key")
    config_changed()
    with pytest.raises(openai.InternalServerError) as info:
        openai_for(secret).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 502
    assert "gm-wrong-key" not in json.dumps(info.value.body)


def test_unsupported_parameter_is_a_400(fake: FakeGemini, secret: str, openai_for: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_for(secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], logprobs=True
        )
    assert "'logprobs'" in info.value.message
    assert fake.received == []
