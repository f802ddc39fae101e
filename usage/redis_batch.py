"""A batch of usage events into Redis, exactly once: stream entries and counter increments.

The recorder's writer numbers its batches (``writer id``, ``seq``: one writer per
process, its batches in order). One Lua script applies a batch atomically - an XADD per
event and its counter increments - and remembers the writer's last applied ``seq``
(``{gw}:usage:seq:<writer>``, kept 7 days; every key of the script carries the
``{gw}`` hash tag, one slot on Redis Cluster). A batch whose ``seq`` is already applied
changes nothing and returns nil. So a batch is applied once whatever happens to the
reply: the client library's retry after a lost reply, or a spooled batch (Redis failed
after it had applied it) replayed later, cannot count the spend twice.

Order matters for the ``seq`` check: a writer with spooled batches spools every later
batch too until its spool is replayed (usage/recorder.py, usage/spool.py).

The recorder's writer calls the script through ``BatchConnection``: the command packed
in one step and sent on a connection the writer keeps, instead of redis-py's generic
command path (a ``Script`` object, per-argument encoding, a connection taken from and
given back to the pool per call). With about two events per batch at 16 connections
that path cost ~40 of the ~65 µs of client CPU per batch (measured in a loop,
docs/benchmark.md).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Sequence
from typing import Any

from redis._parsers import _RESP2Parser, _RESP3Parser
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatewaysite.redis_client import SLOT
from gatewaysite.sockets import recv_expecting_wait

SEQ_TTL_SECONDS = 7 * 86_400

# KEYS: the writer's seq key, the stream, then every counter key in event order.
# ARGV: seq, seq ttl, event count, then per event: payload, counter count, (amount, ttl) per counter.
_APPLY = """
local seq = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= seq then return false end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local values = {}
local at = 4
local key = 3
for _ = 1, tonumber(ARGV[3]) do
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[at])
  local counters = tonumber(ARGV[at + 1])
  at = at + 2
  for _ = 1, counters do
    values[#values + 1] = redis.call('INCRBY', KEYS[key], ARGV[at])
    if tonumber(ARGV[at + 1]) > 0 then redis.call('EXPIRE', KEYS[key], ARGV[at + 1]) end
    key = key + 1
    at = at + 2
  end
end
return values
"""

_SHA = hashlib.sha1(_APPLY.encode()).hexdigest().encode()

Counter = tuple[str, int, int]  # key, amount, ttl seconds (0: none)

_script: Any = None


def seq_key(writer: str) -> str:
    return f"{SLOT}:usage:seq:{writer}"


def script_arguments(
    stream: str, writer: str, seq: int, events: Sequence[tuple[bytes, Sequence[Counter]]]
) -> tuple[list[str], list[bytes | int]]:
    """The script's KEYS and ARGV for a batch (the layout the script's header comment gives)."""
    keys: list[str] = [seq_key(writer), stream]
    args: list[bytes | int] = [seq, SEQ_TTL_SECONDS, len(events)]
    for payload, counters in events:
        args += [payload, len(counters)]
        for key, amount, ttl in counters:
            keys.append(key)
            args += [amount, ttl]
    return keys, args


def apply_batch(
    client: Any, stream: str, writer: str, seq: int, events: Sequence[tuple[bytes, Sequence[Counter]]]
) -> list[list[int]] | None:
    """Apply the batch once; the counters' new values per event, or None if it was applied before."""
    global _script
    if _script is None:
        _script = client.register_script(_APPLY)  # EVALSHA, loaded on first use by any client
    keys, args = script_arguments(stream, writer, seq, events)
    return split_values(_script(keys=keys, args=args, client=client), events)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def pack_batch(stream: str, writer: str, seq: int, events: Sequence[tuple[bytes, Sequence[Counter]]]) -> bytes:
    """The EVALSHA command of ``apply_batch`` as RESP bytes (one ``send``, no per-argument encoding by redis-py)."""
    keys, args = script_arguments(stream, writer, seq, events)
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n%b%b" % (3 + len(keys) + len(args), _bulk(_SHA), _bulk(b"%d" % len(keys)))]
    parts += [_bulk(key.encode()) for key in keys]
    parts += [_bulk(arg if isinstance(arg, bytes) else b"%d" % arg) for arg in args]
    return b"".join(parts)


INCOMPLETE = object()  # parse_reply: the reply has not fully arrived yet
_NULLS = (b"_", b"#f", b"$-1", b"*-1")  # RESP3 null and false, RESP2 null bulk and null array


def parse_reply(data: bytes) -> Any:
    """The script's reply from raw RESP2 or RESP3 bytes: a list of integers, None (applied
    before: null or false), an error as its exception (``NoScriptError`` for NOSCRIPT), or
    ``INCOMPLETE`` when more bytes are due. Any other shape is a ``ResponseError``."""
    end = data.find(b"\r\n")
    if end < 0:
        return INCOMPLETE
    head = data[:end]
    if head in _NULLS:
        return None
    kind = head[:1]
    if kind == b"-":
        message = head[1:].decode("utf-8", errors="replace")
        return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
    if kind != b"*":
        return ResponseError(f"unexpected reply to the usage batch: {head[:80]!r}")
    count = int(head[1:])
    lines = data[end + 2 :].split(b"\r\n", count)
    if len(lines) <= count:
        return INCOMPLETE
    values = []
    for line in lines[:count]:
        if line[:1] != b":":
            return ResponseError(f"unexpected item in the usage batch's reply: {line[:80]!r}")
        values.append(int(line[1:]))
    return values


def split_values(reply: Any, events: Sequence[tuple[bytes, Sequence[Counter]]]) -> list[list[int]] | None:
    """The script's flat reply as the counters' new values per event, or None if the batch was applied before."""
    if not isinstance(reply, list):  # nil (RESP2) or false (RESP3): applied before
        return None
    values = [int(v) for v in reply]
    result: list[list[int]] = []
    position = 0
    for _, counters in events:
        result.append(values[position : position + len(counters)])
        position += len(counters)
    return result


class BatchConnection:
    """The recorder writer's own connection for ``apply_batch`` (one writer per process).

    The connection comes from the client's pool (so authentication, TLS, the database and,
    behind Sentinel, the current master are the pool's) and stays with the writer. On a
    connection error or timeout the call is made once more on a new connection: the
    batch's ``seq`` makes a repeat harmless if the first try was applied and only its
    reply was lost. Any other failure drops the connection and goes to the caller (which
    spools the batch). A Redis Cluster client takes redis-py's command path (its redirects
    after a resharding), one call per batch as before.
    """

    def __init__(self) -> None:
        self._client: Any = None
        self._connection: Any = None
        self._pid = 0

    def apply(
        self, client: Any, stream: str, writer: str, seq: int, events: Sequence[tuple[bytes, Sequence[Counter]]]
    ) -> list[list[int]] | None:
        if isinstance(client, RedisCluster):
            return apply_batch(client, stream, writer, seq, events)
        packed = pack_batch(stream, writer, seq, events)
        try:
            reply = self._call(client, packed)
        except (RedisConnectionError, RedisTimeoutError):  # _call dropped the connection: once more on a new one
            reply = self._call(client, packed)
        return split_values(reply, events)

    def _call(self, client: Any, packed: bytes) -> Any:
        connection = self._connection
        if connection is None or self._client is not client or self._pid != os.getpid():
            self.drop()
            connection = client.connection_pool.get_connection()
            self._connection, self._client, self._pid = connection, client, os.getpid()
        try:
            connection.send_packed_command([packed])
            try:
                return self._read(connection)
            except NoScriptError:  # a new or flushed Redis: load the script, then the same command
                connection.send_command("SCRIPT", "LOAD", _APPLY)
                connection.read_response()
                connection.send_packed_command([packed])
                return self._read(connection)
        except BaseException:
            self.drop()
            raise

    @staticmethod
    def _read(connection: Any) -> Any:
        """The script's reply, read from the socket and parsed here (``parse_reply``): redis-py's
        pure-Python reply parser (a buffer object, a line read and a type dispatch per item) cost
        about as much as the rest of the writer's call. Waits for readability before reading
        (``recv_expecting_wait``: the reply is never there yet just after the send). redis-py's
        own path is kept where its parser may hold bytes or the socket is TLS (bytes can wait
        inside the TLS layer, unseen by a readability wait)."""
        sock = connection._sock
        parser = connection._parser
        if (
            sock is None
            or isinstance(sock, ssl.SSLSocket)
            or type(parser) not in (_RESP2Parser, _RESP3Parser)
            or parser._buffer is None
            or parser._buffer.unread_bytes()
        ):
            return connection.read_response()
        try:
            data = b""
            chunk = recv_expecting_wait(sock, 65536)
            while chunk:
                data += chunk
                reply = parse_reply(data)
                if reply is not INCOMPLETE:
                    break
                chunk = sock.recv(65536)
            else:
                raise RedisConnectionError("Connection closed by server.")
        except TimeoutError as exc:  # socket.timeout
            raise RedisTimeoutError("Timeout reading from the usage batch's connection") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error reading from the usage batch's connection: {exc}") from exc
        if isinstance(reply, Exception):
            raise reply
        return reply

    def drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._pid == os.getpid():  # a forked child leaves its parent's connection alone
            connection.disconnect()
            self._client.connection_pool.release(connection)
