"""Deadlines on slow upstreams: a whole answer, a stream's first event, the gap between events.

The loopback upstream here drips its bytes (one every few tens of milliseconds) or stalls
between stream events, while each single read stays well under ``read_timeout``: only the
deadlines can cut such an upstream. Past a deadline the client gets an OpenAI-shaped 504
(before the first byte: the next deployment is tried first) or, mid-stream, an error event;
the connection to the slow upstream is closed, and the request is recorded as an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json, stream_events
from tests.procs import start_gateway
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello"}]


@dataclass
class Slow(Reply):
    drip: float = 0.0  # seconds between two bytes of the body (every byte of every event for a stream)
    drip_headers: int = 0  # pad the headers with this many bytes and drip them too
    stall_after_events: int | None = None
    stall: float = 0.0


class SlowOpenAI(FakeOpenAI):
    """Answers ``Slow`` replies byte by byte; counts the clients that hung up on it."""

    def __init__(self) -> None:
        super().__init__()
        self.hung_up = 0

    def send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if not isinstance(reply, Slow):
            super().send(handler, reply)
            return
        try:
            self._send_slowly(handler, reply)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.hung_up += 1
            handler.close_connection = True

    def _drip(self, handler: BaseHTTPRequestHandler, data: bytes, pause: float) -> None:
        for i in range(len(data)):
            time.sleep(pause)
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()

    def _send_slowly(self, handler: BaseHTTPRequestHandler, reply: Slow) -> None:
        import json

        body = json.dumps(reply.json).encode() if reply.events is None else b""
        head = b"HTTP/1.1 200 OK\r\n"
        if reply.events is None:
            head += b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n"
        else:
            head += b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        if reply.drip_headers:
            head += b"x-padding: " + b"p" * reply.drip_headers + b"\r\n"
            self._drip(handler, head + b"\r\n", reply.drip)
        else:
            handler.wfile.write(head + b"\r\n")
            handler.wfile.flush()
        if reply.events is None:
            self._drip(handler, body, reply.drip)
            return
        for index, frame in enumerate(reply.events):
            if reply.stall_after_events is not None and index == reply.stall_after_events:
                time.sleep(reply.stall)
            chunk = f"{len(frame):x}\r\n".encode() + frame + b"\r\n"
            if reply.drip:
                self._drip(handler, chunk, reply.drip)
            else:
                handler.wfile.write(chunk)
                handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    def wait_hung_up(self, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hung_up >= count:
                return True
            time.sleep(0.05)
        return False


@pytest.fixture
def upstreams() -> Iterator[tuple[SlowOpenAI, FakeOpenAI]]:
    slow, fast = SlowOpenAI().start(), FakeOpenAI().start()
    yield slow, fast
    for server in (slow, fast):
        threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def routes(
    upstreams: tuple[SlowOpenAI, FakeOpenAI],
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    redis_client: Any,
) -> Any:
    """``gpt-4o-mini`` on the slow upstream first; ``with_fallback`` adds the fast one second."""
    slow, fast = upstreams
    deadlines = {"read_timeout": 2.0, "response_timeout": 0.6, "first_chunk_timeout": 0.6, "stream_idle_timeout": 0.4}
    provider = make_provider("slow", base_url=slow.url + "/v1", vendor="openai", **deadlines)
    make_deployment(provider, MODEL, name="slow", priority=0)
    make_price("openai", MODEL, "0.15", "0.60")
    _, secret = issue_key()

    def with_fallback() -> None:
        make_deployment(make_provider("fast", base_url=fast.url + "/v1", vendor="openai"), MODEL, priority=1)

    return {"secret": secret, "with_fallback": with_fallback}


def _post(url: str, secret: str, **body: Any) -> requests.Response:
    return requests.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, **body},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )


def _record() -> UsageRecord:
    drain(claim_idle_ms=0)
    (record,) = UsageRecord.objects.all()
    return record


def test_a_dripping_answer_is_cut_at_the_response_deadline_and_the_next_deployment_answers(
    gateway_url: str, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI]
) -> None:
    slow, fast = upstreams
    routes["with_fallback"]()
    # ~300 bytes at one per 50 ms: 15 s to finish; each read waits 50 ms, far under read_timeout
    slow.queue(Slow(json=completion_json(), drip=0.05))
    response = _post(gateway_url, routes["secret"])
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "fast-gpt-4o-mini"
    assert response.headers["x-gateway-attempts"] == "2"
    assert slow.wait_hung_up(), "the gateway kept the slow upstream's connection open"
    record = _record()
    assert record.status == "ok" and record.attempts == 2


def test_past_the_response_deadline_the_client_gets_an_openai_shaped_504(
    gateway_url: str, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI], openai_for: Any
) -> None:
    slow, _ = upstreams
    slow.queue(Slow(json=completion_json(), drip=0.05))
    with pytest.raises(openai.InternalServerError) as raised:
        openai_for(routes["secret"]).chat.completions.create(model=MODEL, messages=HELLO)
    assert raised.value.status_code == 504
    error = raised.value.body
    assert isinstance(error, dict) and error["code"] == "upstream_timeout"
    assert "within 0.6 s" in error["message"]
    assert slow.wait_hung_up()
    record = _record()
    assert (record.status, record.http_status, record.error_code) == ("error", 504, "upstream_timeout")
    # the connection was closed, not pooled: the next request works on a fresh one
    assert _post(gateway_url, routes["secret"]).status_code == 200


def test_a_stream_whose_first_event_drips_falls_back_before_the_first_byte(
    gateway_url: str, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI], openai_for: Any
) -> None:
    slow, _ = upstreams
    routes["with_fallback"]()
    slow.queue(Slow(events=stream_events(), drip=0.05))
    stream = openai_for(routes["secret"]).chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello from the stream."
    assert slow.wait_hung_up()


def test_a_stream_that_stalls_midway_ends_with_an_error_event_and_an_error_record(
    gateway_url: str, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI], openai_for: Any
) -> None:
    slow, _ = upstreams
    routes["with_fallback"]()  # never used: part of the answer is already out
    slow.queue(Slow(events=stream_events(["Hello", " there", " friend"]), stall_after_events=3, stall=5.0))
    stream = openai_for(routes["secret"]).chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(received) == "Hello there"
    assert raised.value.code == "upstream_timeout"
    assert "stall" in raised.value.message
    assert slow.wait_hung_up()
    record = _record()
    assert (record.status, record.http_status, record.error_code) == ("error", 504, "upstream_timeout")
    assert record.usage_estimated and record.completion_tokens == 2 and record.cost_usd > 0


def test_under_gevent_a_dripping_status_line_and_headers_are_cut_too(
    tmp_path: Path, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI]
) -> None:
    """The production worker: ``http.client`` reads the headers in many small reads, each far
    under ``read_timeout``; the deadline still holds (gevent.Timeout over that phase)."""
    slow, _ = upstreams
    # 2,000 header bytes at 10 ms each: 20 s, longer than the client waits
    slow.queue(
        Slow(json=completion_json(), drip=0.01, drip_headers=2000),
        Slow(events=stream_events(), drip=0.01, drip_headers=2000),
    )
    server = start_gateway(tmp_path, workers=1).wait_healthy()
    try:
        response = _post(server.url, routes["secret"])
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "upstream_timeout"
        streamed = requests.post(
            server.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": HELLO, "stream": True},
            headers={"Authorization": f"Bearer {routes['secret']}"},
            timeout=15,
        )
        assert streamed.status_code == 504 and streamed.json()["error"]["code"] == "upstream_timeout"
        assert slow.wait_hung_up(2)
    finally:
        server.stop()


def test_under_gevent_a_stream_that_stalls_midway_is_cut_at_its_idle_deadline(
    tmp_path: Path, routes: dict[str, Any], upstreams: tuple[SlowOpenAI, FakeOpenAI]
) -> None:
    """The production worker, where a stream's next read waits for the socket first, on a bare
    loop timer (gatewaysite/sockets.py): the gap between events is still cut at
    ``stream_idle_timeout`` (0.4 s here; the upstream stalls 5 s)."""
    slow, _ = upstreams
    slow.queue(Slow(events=stream_events(["Hello", " there", " friend"]), stall_after_events=3, stall=5.0))
    server = start_gateway(tmp_path, workers=1).wait_healthy()
    try:
        started = time.monotonic()
        streamed = _post(server.url, routes["secret"], stream=True)
        took = time.monotonic() - started
        assert streamed.status_code == 200
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        relayed = "".join(events[:-1])
        assert '"Hello"' in relayed and '" there"' in relayed and '" friend"' not in relayed
        assert '"code":"upstream_timeout"' in events[-1].replace(" ", "") and "stall" in events[-1]
        assert took < 4.0  # cut at the idle deadline, not at the end of the upstream's stall
        assert slow.wait_hung_up()
    finally:
        server.stop()
