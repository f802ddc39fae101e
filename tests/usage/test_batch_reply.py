"""The recorder's batch reply, read from the socket and parsed by usage/redis_batch.py: every
shape the script's reply can take, and a real Redis behind a loopback proxy that hands the
reply over a byte at a time, or holds it back until the client's timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError

from tests.procs import PrivateRedis
from usage.redis_batch import _APPLY, INCOMPLETE, BatchConnection, parse_reply, seq_key

STREAM = "{gw}:usage"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"*2\r\n:1\r\n:-22\r\n", [1, -22]),
        (b"*0\r\n", []),
        (b"_\r\n", None),  # RESP3 null
        (b"#f\r\n", None),  # RESP3 false: the batch was applied before
        (b"$-1\r\n", None),  # RESP2 null bulk
        (b"*-1\r\n", None),
        (b"*2\r\n:1\r\n:2", INCOMPLETE),
        (b"*2\r\n:1\r\n", INCOMPLETE),
        (b"*3", INCOMPLETE),
        (b"", INCOMPLETE),
    ],
)
def test_reply_shapes(raw: bytes, expected: Any) -> None:
    assert parse_reply(raw) == expected if isinstance(expected, list) else parse_reply(raw) is expected


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"-NOSCRIPT No matching script.\r\n", NoScriptError),
        (b"-ERR Error running script\r\n", ResponseError),
        (b"+OK\r\n", ResponseError),
        (b"*1\r\n$1\r\nx\r\n", ResponseError),
    ],
)
def test_errors_and_unexpected_replies_come_back_as_exceptions(raw: bytes, error: type[Exception]) -> None:
    reply = parse_reply(raw)
    assert type(reply) is error


class _Proxy:
    """Loopback TCP proxy to a Redis: replies are passed on one byte at a time
    (``dribble``), or the first connection's replies after its handshake are held back
    (``hold_first``: the client times out, and its retry on a new connection goes through)."""

    def __init__(self, upstream_port: int, *, dribble: bool = False, hold_first: bool = False) -> None:
        self.upstream_port = upstream_port
        self.dribble = dribble
        self.hold_first = hold_first
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            batch_sent = threading.Event()  # this connection has sent a batch (EVALSHA)
            hold = self.hold_first and self.connections == 1
            threading.Thread(target=self._pump, args=(client, upstream, False, None, batch_sent), daemon=True).start()
            threading.Thread(
                target=self._pump,
                args=(upstream, client, self.dribble, batch_sent if hold else None, None),
                daemon=True,
            ).start()

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        dribble: bool,
        hold_after: threading.Event | None,
        mark: threading.Event | None,
    ) -> None:
        target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := source.recv(65536):
                if mark is not None and b"EVALSHA" in data:
                    mark.set()
                if hold_after is not None and hold_after.is_set():
                    continue  # the batch's reply (and anything after) never reaches the client
                if dribble:
                    for index in range(len(data)):
                        target.sendall(data[index : index + 1])
                        time.sleep(0.0005)
                else:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", durable=False).start()
    try:
        yield server
    finally:
        server.kill()


def _events(count: int) -> list[tuple[bytes, list[tuple[str, int, int]]]]:
    return [(b'{"n":%d}' % n, [("{gw}:spend:key:9", 10 + n, 0), ("{gw}:budget:key:9:m", 1, 60)]) for n in range(count)]


def test_a_reply_arriving_a_byte_at_a_time_is_read_whole(private_redis: PrivateRedis) -> None:
    proxy = _Proxy(private_redis.port, dribble=True)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=10)
    try:
        connection = BatchConnection()
        values = connection.apply(client, STREAM, "w1", 1, _events(12))
        direct = private_redis.client()
        assert int(direct.get("{gw}:spend:key:9")) == sum(10 + n for n in range(12))
        assert values is not None
        assert [v[0] for v in values] == [sum(10 + k for k in range(n + 1)) for n in range(12)]
        assert [v[1] for v in values] == list(range(1, 13))
        assert direct.xlen(STREAM) == 12
        assert connection.apply(client, STREAM, "w1", 1, _events(12)) is None  # the same batch again: a no-op
        assert direct.xlen(STREAM) == 12

        def not_used(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("redis-py's reply parser was used")

        connection._connection.read_response = not_used  # the writer reads its replies itself
        assert connection.apply(client, STREAM, "w1", 2, _events(1)) == [[sum(10 + n for n in range(12)) + 10, 13]]
        connection.drop()
    finally:
        client.close()
        proxy.close()


def test_a_reply_held_back_times_out_and_the_batch_is_applied_once_on_a_new_connection(
    private_redis: PrivateRedis,
) -> None:
    private_redis.client().script_load(_APPLY)  # so the first try is applied, not refused (NOSCRIPT)
    proxy = _Proxy(private_redis.port, hold_first=True)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.5)
    try:
        connection = BatchConnection()
        values = connection.apply(client, STREAM, "w2", 7, _events(3))
        # the first try was applied but its reply never came: the retry finds the batch applied
        assert values is None
        assert proxy.connections == 2
        direct = private_redis.client()
        assert direct.xlen(STREAM) == 3
        assert int(direct.get("{gw}:spend:key:9")) == 10 + 11 + 12
        assert direct.get(seq_key("w2")) == b"7"
        connection.drop()
    finally:
        client.close()
        proxy.close()
