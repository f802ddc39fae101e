"""A stream the upstream cuts short never passes for a whole answer.

For each wire format the loopback upstream sends part of a stream and ends it (a clean
end of the HTTP body, or a dropped connection) without its end marker: OpenAI's
``finish_reason`` / ``[DONE]``, Anthropic's ``message_stop``, Gemini's ``finishReason``.
The openai SDK, through the gateway, must raise (an error event, no ``[DONE]``), and the
request is recorded ``truncated`` with the tokens the gateway counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests

from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.http_server import Reply, ScriptedServer
from usage.consumer import drain
from usage.models import UsageRecord
from usage.tokens import count_text_tokens

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]


def _openai_cut() -> Reply:
    frames = openai_server.stream_events(["Hello", " there", " friend"])
    return Reply(events=frames[:3])  # role, "Hello", " there": no finish_reason, no usage, no [DONE]


def _openai_dropped() -> Reply:
    return Reply(events=openai_server.stream_events(["Hello", " there", " friend"]), close_after_events=3)


def _anthropic_cut() -> Reply:
    frames = anthropic_server.stream_events(["Hello", " there", " friend"])
    # message_start, content_block_start, ping, "Hello", " there"; no message_delta, no message_stop
    return Reply(events=frames[:5])


def _gemini_cut() -> Reply:
    frames = gemini_server.stream_events(["Hello", " there", " friend"])
    return Reply(events=frames[:2])  # the last chunk (with finishReason) never comes


CASES = {
    "openai": ("openai", openai_server.FakeOpenAI, _openai_cut, "/v1", "sk-up"),
    "openai-dropped": ("openai", openai_server.FakeOpenAI, _openai_dropped, "/v1", "sk-up"),
    "anthropic": ("anthropic", anthropic_server.FakeAnthropic, _anthropic_cut, "", "sk-ant-test"),
    "gemini": ("gemini", gemini_server.FakeGemini, _gemini_cut, "", "gm-test-key"),
}


@pytest.fixture(params=sorted(CASES))
def cut_route(
    request: pytest.FixtureRequest,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    redis_client: Any,
) -> Iterator[dict[str, Any]]:
    kind, server_class, cut, path, api_key = CASES[request.param]
    server: ScriptedServer = server_class().start()
    provider = make_provider(kind, kind=kind, base_url=server.url + path, vendor=kind, api_key=api_key)
    make_deployment(provider, "chat", provider_model="model-x")
    make_price(kind, "model-x", "1", "2")
    _, secret = issue_key()
    server.queue(cut())
    yield {"secret": secret, "server": server}
    server.stop()


def test_a_cut_stream_raises_in_the_openai_sdk_and_is_recorded_truncated(
    cut_route: dict[str, Any], openai_for: Any
) -> None:
    stream = openai_for(cut_route["secret"]).chat.completions.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(received) == "Hello there"
    assert raised.value.code == "upstream_truncated"

    drain(claim_idle_ms=0)
    (record,) = UsageRecord.objects.all()
    assert record.status == "truncated" and record.error_code == "upstream_truncated"
    assert record.usage_estimated
    # counted by the gateway: what reached the client
    assert record.completion_tokens == count_text_tokens("chat", "Hello there") and record.prompt_tokens > 0
    assert record.cost_usd is not None and record.cost_usd > 0


def test_a_cut_stream_has_no_done_marker(cut_route: dict[str, Any], gateway_url: str) -> None:
    response = requests.post(
        gateway_url + "/v1/chat/completions",
        json={"model": "chat", "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {cut_route['secret']}"},
        timeout=20,
    )
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in response.text
    assert '"code":"upstream_truncated"' in frames[-1].replace(" ", "")


def test_a_whole_stream_still_ends_with_done(openai_route: dict[str, Any], openai_for: Any) -> None:
    stream = openai_for(openai_route["secret"]).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from the stream."
    drain(claim_idle_ms=0)
    assert UsageRecord.objects.get().status == "ok"
