"""A finished request of the server's connection handler (gatewaysite/http_server.py) is freed
by reference counting alone: its body's ``Input`` refers back to it, and ``release`` breaks that
cycle. Left to the collector, such requests reached the oldest generation under load and the
worker's memory grew until the timed full collection."""

from __future__ import annotations

import gc
import socket

from gatewaysite.http_server import Connection, Input, ParsedRequest, release

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def _unreachable_after_one_request(done: bool) -> int:
    """The request's objects (``ParsedRequest``, ``Input``) only the collector can free once a
    parsed request, with its ``Input``, is dropped. Counted by type: other threads of the test
    process may leave garbage of their own meanwhile."""
    ours, theirs = socket.socketpair()
    try:
        conn = Connection(ours, 8190, 100, 8190, 0)
        conn.parser.feed_data(REQUEST)
        request = conn.queue.popleft()
        request.body = Input(conn, request)  # as GatewayWorker.prepare sets it
        assert request.body.read() == b"{}"
        conn.parsing = None  # as the next request's start replaces it
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage, not freed
        try:
            if done:
                release(request)
            del request
            gc.collect()
            return sum(isinstance(found, (ParsedRequest, Input)) for found in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        ours.close()
        theirs.close()


def test_a_released_request_leaves_nothing_for_the_collector() -> None:
    assert _unreachable_after_one_request(done=True) == 0


def test_without_release_the_request_and_its_input_are_a_cycle() -> None:
    """What ``release`` is for: the same request left as it was is garbage only the collector finds."""
    assert _unreachable_after_one_request(done=False) == 2
