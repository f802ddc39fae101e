"""The production server's response writer (gatewaysite/gunicorn_worker.py): the same bytes
as gunicorn's own, with the headers sent together with the body."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from gatewaysite.gunicorn_worker import http_date
from tests.procs import LiveGateway, start_gateway
from tests.raw_http import parse_response, raw_exchange, read_until_closed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    server = start_gateway(tmp_path, workers=1, access_log=None).wait_healthy()
    try:
        yield server
    finally:
        server.stop()


def test_an_answer_has_its_status_line_headers_and_body(gateway: LiveGateway) -> None:
    raw = raw_exchange(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    status, headers, body = parse_response(raw)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: ")
    assert status == 200
    assert headers["connection"] == "close"
    assert headers["x-request-id"].startswith("req_")
    assert int(headers["content-length"]) == len(body)
    assert body == b'{"status":"ok"}'
    assert parsedate_to_datetime(headers["date"]).tzinfo is not None


def test_head_gets_the_headers_and_no_body(gateway: LiveGateway) -> None:
    raw = raw_exchange(gateway.port, b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 15" in head
    assert rest == b""


def test_keep_alive_answers_each_request_in_turn(gateway: LiveGateway) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request + request + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        raw = read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert raw.count(b'{"status":"ok"}') == 3


def test_http_1_0_is_answered_and_closed(gateway: LiveGateway) -> None:
    raw = raw_exchange(gateway.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    assert raw.endswith(b'\r\n\r\n{"status":"ok"}')


def test_the_date_header_is_the_current_second_in_http_format() -> None:
    from gunicorn.util import http_date as gunicorn_http_date  # the original, before install()

    assert http_date(1_700_000_000.9) == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert http_date() in {gunicorn_http_date(), http_date()}
