"""The production server's connection handler (gatewaysite/http_server.py) against a live gunicorn:
HTTP/1.1 as gunicorn's own worker serves it, on raw sockets."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import stream_events
from tests.procs import LiveGateway, start_gateway, wait_until
from tests.raw_http import parse_response, raw_exchange, read_until_closed

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def routed(fake_openai: Any, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any) -> dict:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, MODEL, max_output_tokens=16_384)
    make_price("openai", MODEL, "2.50", "10.00")
    return {"secret": issue_key(name="plain")[1], "fake": fake_openai}


@pytest.fixture
def gateway(tmp_path: Path, routed: dict, redis_client: Any) -> Iterator[LiveGateway]:
    """One worker, the access log on (``<pid> status path`` lines)."""
    server = start_gateway(tmp_path, workers=1, clean=True, GATEWAY_SEED_PRICING="0").wait_healthy()
    try:
        yield server
    finally:
        server.stop()


def chat_body(**extra: Any) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], **extra})


def chat_head(secret: str, body: bytes, *extra: str) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {secret}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every response in ``raw`` (Content-Length bodies), in order."""
    found = []
    while raw:
        status, headers, body = parse_response(raw)
        found.append((status, headers, body))
        head_end = raw.index(b"\r\n\r\n") + 4
        raw = raw[head_end + int(headers.get("content-length", "0")) :]
    return found


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_the_worker_class_is_the_gateways(gateway: LiveGateway) -> None:
    assert "Using worker: gatewaysite.http_server.GatewayWorker" in gateway.log()


def test_keep_alive_and_pipelined_requests_are_answered_in_order(gateway: LiveGateway, routed: dict) -> None:
    body = chat_body()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        # three requests in one write: the bytes after each stay buffered for the next
        sock.sendall(
            HEALTHZ
            + chat_head(routed["secret"], body)
            + body
            + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        answers = responses(read_until_closed(sock))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [headers["connection"] for _, headers, _ in answers] == ["keep-alive", "keep-alive", "close"]
    assert orjson.loads(answers[1][2])["object"] == "chat.completion"
    assert answers[0][2] == answers[2][2] == b'{"status":"ok"}'

    # one request at a time on the same connection
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        for _ in range(3):
            sock.sendall(HEALTHZ)
            received = b""
            while not received.endswith(b'{"status":"ok"}'):
                received += sock.recv(65536)
            assert received.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: ")


def test_http_1_0_closes_unless_asked_to_keep_alive(gateway: LiveGateway) -> None:
    raw = raw_exchange(gateway.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n") and b"Connection: close\r\n" in raw

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        received = b""
        while not received.endswith(b'{"status":"ok"}'):
            received += sock.recv(65536)
        assert b"Connection: keep-alive\r\n" in received
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.0 200 OK\r\n")


def test_head_has_the_length_and_no_body(gateway: LiveGateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(
            b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
            + HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        raw = read_until_closed(sock)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 15\r\n" in head and b"Connection: keep-alive" in head
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # the next answer follows the headers at once
    assert rest.endswith(b'{"status":"ok"}')


def test_a_chunked_body_is_decoded(gateway: LiveGateway, routed: dict) -> None:
    body = chat_body()
    head = chat_head(routed["secret"], body).replace(
        f"Content-Length: {len(body)}".encode(), b"Transfer-Encoding: chunked\r\nConnection: close"
    )
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    framed = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"
    status, _, answer = parse_response(raw_exchange(gateway.port, head + framed))
    assert status == 200, answer[:300]
    assert routed["fake"].received[-1].body["messages"] == [{"role": "user", "content": "Hello"}]


def test_expect_100_continue_is_answered_before_the_body(gateway: LiveGateway, routed: dict) -> None:
    body = chat_body()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(chat_head(routed["secret"], body, "Expect: 100-continue", "Connection: close"))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = parse_response(read_until_closed(sock))
    assert status == 200, answer[:300]

    # an expectation gunicorn does not know: 417
    raw = raw_exchange(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nExpect: something\r\n\r\n")
    assert status_of(raw) == 417


@pytest.fixture(params=["gatewaysite.http_server.GatewayWorker", "gevent"])
def either_worker(request: pytest.FixtureRequest, tmp_path: Path, redis_client: Any) -> Iterator[LiveGateway]:
    """The gateway's worker and gunicorn's own: what the client sees must not differ."""
    server = start_gateway(
        tmp_path, workers=1, clean=True, access_log=None, GUNICORN_WORKER_CLASS=request.param
    ).wait_healthy()
    try:
        yield server
    finally:
        server.stop()


def test_ambiguous_framing_is_refused(either_worker: LiveGateway) -> None:
    gateway = either_worker
    cases = {
        "length and chunked": (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n",
            400,
        ),
        "two lengths": (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
        "bad length": ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1x\r\n\r\n{}", 400),
        "gzip only": ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        "unknown coding": (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: bogus, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        "chunked HTTP/1.0": (
            "POST /v1/chat/completions HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        "two hosts": ("GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: y\r\n\r\n", 400),
        "HTTP/2.0 request line": ("GET /healthz HTTP/2.0\r\nHost: localhost\r\n\r\n", 400),
        "control character in a value": ("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\x01b\r\n\r\n", 400),
        "folded header": ("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n", 400),
        "non-ASCII target": ("GET /h\xe9 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        "authority form on GET": ("GET localhost:80 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    }
    for name, (request, expected) in cases.items():
        raw = raw_exchange(gateway.port, request.encode("latin-1"))
        assert status_of(raw) == expected, (name, raw[:200])
        assert b"Connection: close" in raw, name


def test_limits_are_gunicorns_to_the_byte(either_worker: LiveGateway) -> None:
    """gatewaysite/gunicorn.conf.py: 8190-byte request line and header lines, 100 headers."""
    gateway = either_worker
    fixed = len("GET ") + len(" HTTP/1.1")
    at_limit = "/healthz?" + "a" * (8190 - fixed - len("/healthz?"))
    close = "Connection: close\r\n"
    assert status_of(raw_exchange(gateway.port, f"GET {at_limit} HTTP/1.1\r\n{close}\r\n".encode())) == 200
    assert status_of(raw_exchange(gateway.port, f"GET {at_limit}a HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())) == 414
    assert status_of(raw_exchange(gateway.port, f"GET /{'a' * 100_000} HTTP/1.1\r\n".encode())) == 414

    # a header line of 8188 bytes plus its CRLF is allowed, one more byte is not
    value = "v" * (8188 - len("X-Big: "))
    assert (
        status_of(raw_exchange(gateway.port, f"GET /healthz HTTP/1.1\r\n{close}X-Big: {value}\r\n\r\n".encode())) == 200
    )
    assert status_of(raw_exchange(gateway.port, f"GET /healthz HTTP/1.1\r\nX-Big: {value}v\r\n\r\n".encode())) == 431

    headers = close + "".join(f"X-{i}: y\r\n" for i in range(99))
    assert status_of(raw_exchange(gateway.port, f"GET /healthz HTTP/1.1\r\n{headers}\r\n".encode())) == 200
    raw = raw_exchange(gateway.port, f"GET /healthz HTTP/1.1\r\n{headers}X-99: y\r\n\r\n".encode())
    assert status_of(raw) == 431
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_header_names_with_underscores_are_dropped(gateway: LiveGateway, routed: dict) -> None:
    """``x_api_key`` would reach the application as ``HTTP_X_API_KEY``, the same as ``x-api-key``
    (the key /v1/messages reads): gunicorn's header_map="drop" leaves it out."""
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Hello"}]})
    for name, authorized in (("x-api-key", True), ("x_api_key", False)):
        response = requests.post(gateway.url + "/v1/messages", data=body, headers={name: routed["secret"]}, timeout=30)
        assert (response.status_code != 401) is authorized, (name, response.status_code, response.text[:200])


def test_a_stream_arrives_chunk_by_chunk(gateway: LiveGateway, routed: dict) -> None:
    words = ["one", " two", " three", " four"]
    routed["fake"].queue(Reply(events=stream_events(words, model=MODEL), event_delay=0.3))
    body = chat_body(stream=True)
    arrivals: list[tuple[float, bytes]] = []
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(chat_head(routed["secret"], body, "Connection: close") + body)
        started = time.monotonic()
        while True:
            data = sock.recv(65536)
            if not data:
                break
            arrivals.append((time.monotonic() - started, data))
    raw = b"".join(data for _, data in arrivals)
    status, headers, decoded = parse_response(raw)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert headers["content-type"].startswith("text/event-stream")
    assert raw.endswith(b"\r\n0\r\n\r\n")
    text = decoded.decode()
    assert "".join(w for w in words if f'"content": "{w}"' in text or f'"content":"{w}"' in text) == "".join(words)
    # the words came as the upstream sent them, 0.3 s apart, not all at the end
    with_word = [at for at, data in arrivals if b"three" in data or b"one" in data]
    assert len(arrivals) >= 4 and with_word[0] < arrivals[-1][0] - 0.5, [at for at, _ in arrivals]


def test_a_client_gone_mid_stream_does_not_stop_the_worker(gateway: LiveGateway, routed: dict) -> None:
    pids = gateway.worker_pids()
    routed["fake"].queue(Reply(events=stream_events(["a"] * 20, model=MODEL), event_delay=0.1))
    body = chat_body(stream=True)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(chat_head(routed["secret"], body) + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
    time.sleep(1.0)
    assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 200
    assert gateway.worker_pids() == pids
    assert "Traceback" not in gateway.log()


def test_the_access_log_names_the_worker_status_and_path(gateway: LiveGateway) -> None:
    for _ in range(3):
        assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 200
    requests.get(gateway.url + "/v1/nope", timeout=10)
    # written after the answer has left: waited for (wait_healthy's request is there too)
    wait_until(lambda: len(gateway.served("/healthz")) >= 4 and gateway.served("/v1/nope"), 10, "access log lines")
    (pid,) = gateway.worker_pids()
    assert set(gateway.served("/healthz")) == {(pid, 200)}
    assert gateway.served("/v1/nope") == [(pid, 404)]


def test_idle_connections_close_and_max_requests_restarts_the_worker(
    tmp_path: Path, routed: dict, redis_client: Any
) -> None:
    server = start_gateway(
        tmp_path, workers=1, clean=True, args=("--max-requests", "5", "--keep-alive", "1"), GATEWAY_SEED_PRICING="0"
    ).wait_healthy()
    try:
        # idle past the keep-alive time (1 s here): closed without an answer, before and between requests
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
            started = time.monotonic()
            assert read_until_closed(idle) == b""
            assert 0.8 < time.monotonic() - started < 5
        (first,) = server.worker_pids()
        with requests.Session() as session:  # one keep-alive connection: closed by the last answer
            answers = [session.get(server.url + "/healthz", timeout=10) for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        wait_until(lambda: server.worker_pids() and server.worker_pids() != [first], 30, "a new worker")
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        wait_until(lambda: server.served("/healthz")[-1][0] != first, 10, "the new worker's access log line")
        assert [pid for pid, _ in server.served("/healthz")[:5]] == [first] * 5
    finally:
        server.stop()


def test_gunicorns_own_worker_is_one_setting_away(tmp_path: Path, redis_client: Any) -> None:
    server = start_gateway(tmp_path, workers=1, clean=True, GUNICORN_WORKER_CLASS="gevent").wait_healthy()
    try:
        assert re.search(r"Using worker: gevent\b", server.log())
        raw = raw_exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\n") and raw.endswith(b'{"status":"ok"}')
    finally:
        server.stop()
