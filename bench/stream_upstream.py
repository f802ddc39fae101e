"""A paced OpenAI-compatible streaming upstream for the benchmark (gevent, raw sockets).

``POST /v1/chat/completions`` answers with server-sent events in chunked encoding:
``--chunks`` content chunks ``--interval`` seconds apart (the first after
``--first-delay``), then a usage chunk and ``[DONE]``. Keep-alive connections are
served request after request. Anything else gets a 404.

``--gate N`` holds every stream before its first byte until N streams are waiting at
once, then lets them all go (what a test uses to show that a proxy holds N streams
together); past ``--gate-timeout`` seconds without N, the waiting ones get a 503.

    python -m bench.stream_upstream --port 18091 --chunks 60 --interval 0.5
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from bench.procs import raise_open_files  # noqa: E402


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def sse_events(chunks: int) -> list[bytes]:
    """The stream's events, each as the bytes of one SSE message."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench-stream"}
    events = []
    for index in range(chunks):
        delta = {"content": "tok "} if index else {"role": "assistant", "content": "tok "}
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        events.append(b"data: " + orjson.dumps(data) + b"\n\n")
    final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    events.append(b"data: " + orjson.dumps(final) + b"\n\n")
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
    }
    events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"


def read_request(sock, buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Read one request; return (request line, body, leftover) or None at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None
        rest += data
    return lines[0], rest[:length], rest[length:]


UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 66\r\n"
    b'Connection: keep-alive\r\n\r\n{"error": {"message": "gate not reached", "type": "server_error"}}'
)


class Gate:
    """Opens when ``size`` streams wait at once; ``size`` 0 is always open."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self.waiting = 0
        self.opened = Event()
        if size <= 0:
            self.opened.set()

    def wait(self) -> bool:
        if self.opened.is_set():
            return True
        self.waiting += 1
        if self.waiting >= self.size:
            print(f"gate open: {self.waiting} streams waiting together", file=sys.stderr, flush=True)
            self.opened.set()
        opened = self.opened.wait(self.timeout)
        self.waiting -= 1
        return bool(opened)


def make_handler(events: list[bytes], interval: float, first_delay: float, gate: Gate | None = None):
    encoded = [chunk(e) for e in events]
    content = encoded[:-3]
    tail = b"".join(encoded[-3:]) + b"0\r\n\r\n"
    gate = gate or Gate(0, 0.0)

    def handle(sock, address) -> None:
        buffer = b""
        try:
            while True:
                request = read_request(sock, buffer)
                if request is None:
                    return
                line, _body, buffer = request
                if not line.startswith(b"POST /v1/chat/completions"):
                    sock.sendall(NOT_FOUND)
                    continue
                if not gate.wait():
                    sock.sendall(UNAVAILABLE)
                    continue
                if first_delay:
                    gevent.sleep(first_delay)
                sock.sendall(HEADERS + content[0])
                for piece in content[1:]:
                    gevent.sleep(interval)
                    sock.sendall(piece)
                sock.sendall(tail)
        except OSError:
            return
        finally:
            sock.close()

    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18091)
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--gate", type=int, default=0, help="hold streams until this many wait at once")
    parser.add_argument("--gate-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    raise_open_files()
    gate = Gate(args.gate, args.gate_timeout)
    handler = make_handler(sse_events(args.chunks), args.interval, args.first_delay, gate)
    server = StreamServer((args.host, args.port), handler, backlog=8192)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    print(f"stream upstream on {args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
