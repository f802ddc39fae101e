"""No provider key reaches a client, a log line or a usage event, whatever the upstream echoes.

The upstream here is a loopback server for each wire format (openai, azure, anthropic,
gemini) that quotes the credential header it received back in its errors: whole, in
upper and lower case, and a 14-character fragment. It does so in a plain error, in an
error answered to a stream request before the first chunk, and in an error event in the
middle of a stream (after the client has its first chunk). Everything the client
receives is read raw, so nothing the gateway sends is left unchecked.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests
from django.conf import settings

from providers.adapters.redaction import REDACTED, redact
from tests.fakes.http_server import Received, Reply, ScriptedServer, sse

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-proj-Q7vLx2mZp9RtY4wKs8NdB3fHj6GcE1aU"
HEADER = {"openai": "authorization", "azure": "api-key", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}
KINDS = list(HEADER)
MODES = ["plain", "stream-start", "stream-mid"]


def leaks(text: str, secret: str = KEY) -> bool:
    """Whether ``text`` holds ``secret`` or any 12-character piece of it, in any case."""
    lowered, key = text.lower(), secret.lower()
    return any(key[i : i + 12] in lowered for i in range(len(key) - 11))


def echo_of(received: Received, kind: str) -> str:
    value = received.headers.get(HEADER[kind], "")
    return f"bad credential {value} / {KEY.upper()} / {KEY.lower()} / starts {KEY[5:19]}..."


class EchoingUpstream(ScriptedServer):
    """Answers every request with an error quoting the credential header it received."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def default_reply(self, received: Received) -> Reply:
        echo = echo_of(received, self.kind)
        text = json.dumps(received.body)
        stream = ("stream" in text and '"stream": true' in text) or "streamGenerateContent" in received.path
        if stream and "mid-stream" in text:
            return Reply(events=self.mid_stream(echo))
        return Reply(status=400, json=self.error(echo))

    def error(self, message: str) -> dict[str, Any]:
        if self.kind == "anthropic":
            return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        if self.kind == "gemini":
            return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    def mid_stream(self, message: str) -> list[bytes]:
        if self.kind == "anthropic":
            start = {
                "type": "message_start",
                "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 5, "output_tokens": 1}},
            }
            return [sse(start, "message_start"), sse({"type": "error", **self.error(message)}, "error")]
        if self.kind == "gemini":
            first = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}]}
            return [sse(first), sse(self.error(message))]
        first = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}],
        }
        return [sse(first), sse(self.error(message))]


@pytest.fixture(scope="module")
def upstreams() -> Any:
    servers = {kind: EchoingUpstream(kind).start() for kind in KINDS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def routes(upstreams: dict[str, EchoingUpstream], make_provider: Any, make_deployment: Any, redis_client: Any) -> Any:
    for kind, server in upstreams.items():
        server.received.clear()
        base_url = server.url + ("/v1" if kind == "openai" else "")
        provider = make_provider(f"echo-{kind}", kind=kind, base_url=base_url, api_key=KEY)
        make_deployment(provider, f"model-{kind}", provider_model=f"upstream-{kind}")
    return upstreams


def send(gateway_url: str, secret: str, kind: str, mode: str) -> str:
    body: dict[str, Any] = {
        "model": f"model-{kind}",
        "messages": [{"role": "user", "content": "mid-stream please" if mode == "stream-mid" else "hello"}],
        "max_tokens": 16,
    }
    if mode != "plain":
        body["stream"] = True
    with requests.post(
        gateway_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        stream=True,
        timeout=30,
    ) as response:
        content = b"".join(response.iter_content(None)).decode()
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        if mode == "stream-mid":
            assert response.status_code == 200 and 'data: {"error"' in content, content
        else:
            assert response.status_code == 400, content
            assert set(json.loads(content)["error"]) >= {"message", "type", "code"}
    return head + "\n\n" + content


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_an_echoed_provider_key_never_reaches_the_client(
    routes: dict[str, EchoingUpstream], gateway_url: str, issue_key: Any, kind: str, mode: str, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    _, secret = issue_key()
    seen = send(gateway_url, secret, kind, mode)

    received = routes[kind].received[-1]
    assert KEY in received.headers[HEADER[kind]]  # the real key went upstream, and was echoed
    assert REDACTED in seen  # the upstream's text reached the client ...
    assert "bad credential" in seen
    assert not leaks(seen), seen  # ... without the key, in any case or in part
    assert not leaks(caplog.text)


def test_usage_events_and_logs_hold_no_provider_key(
    routes: dict[str, EchoingUpstream], gateway_url: str, issue_key: Any, redis_client: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    _, secret = issue_key()
    for kind in KINDS:
        for mode in MODES:
            send(gateway_url, secret, kind, mode)
    entries = redis_client.xrange(settings.GATEWAY["USAGE_STREAM"])
    assert len(entries) == len(KINDS) * len(MODES)
    assert not leaks(repr(entries))
    assert not leaks(caplog.text)


def test_an_echoed_key_in_the_usage_is_neither_logged_nor_stored(
    fake_openai: Any, make_provider: Any, make_deployment: Any, issue_key: Any, gateway_url: str, caplog: Any
) -> None:
    """The key where a token count belongs: an anomaly described by type, never by value."""
    from usage.consumer import drain
    from usage.models import UsageRecord

    caplog.set_level(logging.DEBUG)
    provider = make_provider("odd", base_url=fake_openai.url + "/v1", api_key=KEY)
    make_deployment(provider, "odd-model")
    _, secret = issue_key()
    answer = {"id": "x", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": KEY}}
    fake_openai.queue(Reply(json=answer))
    response = requests.post(
        gateway_url + "/v1/chat/completions",
        json={"model": "odd-model", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert not leaks(response.text) and not leaks(json.dumps(dict(response.headers)))
    drain()
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    assert record.usage_estimated and "prompt_tokens=<str of 40 chars>" in record.usage_anomaly
    assert not leaks(record.usage_anomaly)
    assert "implausible upstream usage" in caplog.text and not leaks(caplog.text)


# --- the redaction itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"Bearer {KEY}",
        KEY.upper(),
        KEY.lower(),
        KEY.swapcase(),
        f"prefix {KEY[:12]} suffix",
        f"{KEY[-12:]}",
        f"x{KEY[3:20].upper()}y and {KEY[10:30]}",
        KEY + KEY,
    ],
)
def test_redact_removes_the_key_and_every_long_fragment(text: str) -> None:
    result = redact(KEY, text)
    assert not leaks(result) and REDACTED in result


def test_redact_keeps_what_is_not_the_key() -> None:
    text = f"Incorrect model; fragment {KEY[:11]} is too short to say anything"
    assert redact(KEY, text) == text
    assert redact("", text) == text
    assert redact("abc", "abc abc") == "abc abc"  # too short to redact without mangling text
    assert redact("short-key", "got SHORT-KEY!") == f"got {REDACTED}!"
    assert redact(KEY, f"a {KEY} b") == f"a {REDACTED} b"
