"""``Input.holds`` (gatewaysite/http_server.py): whether the next bytes of a body are in
memory already. The body middleware reads such a body without arming its read deadline; a
body still on its way keeps the deadline (tests/test_hostile_input.py: a stalled body gets 408)."""

from __future__ import annotations

import socket

from gatewaysite.http_server import Connection, Input


def _request(data: bytes) -> tuple[Input, socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    conn = Connection(ours, 8190, 100, 8190, 0)
    conn.parser.feed_data(data)
    request = conn.parsing if conn.parsing is not None and not conn.queue else conn.queue[0]
    return Input(conn, request), ours, theirs


def test_a_body_that_came_with_its_head_is_held() -> None:
    body, ours, theirs = _request(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    try:
        assert body.holds(2) and body.holds(0) and not body.holds(3)
        assert body.read(2) == b"{}"
        assert not body.holds(1)  # what was read is no longer held
    finally:
        ours.close()
        theirs.close()


def test_a_body_still_on_its_way_is_not_held() -> None:
    body, ours, theirs = _request(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"a"')
    try:
        assert body.holds(4) and not body.holds(10)
    finally:
        ours.close()
        theirs.close()
