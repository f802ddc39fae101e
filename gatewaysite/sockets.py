"""Socket reads and writes shared by the server side (gatewaysite/http_server.py,
gatewaysite/gunicorn_worker.py) and the upstream client (providers/http.py, providers/http1.py)."""

from __future__ import annotations

from typing import Any

from gevent import getcurrent
from gevent.exceptions import ConcurrentObjectUseError


def send_all(sock: Any, data: bytes) -> None:
    """``sock.sendall(data)`` in one ``send`` when the socket takes it all (it nearly always does).

    gevent's ``sendall`` first asks the kernel for the socket's send buffer size
    (``getsockopt``): one more system call per write; ``sendall`` sends what is left.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def recv_expecting_wait(sock: Any, size: int) -> bytes:
    """``sock.recv(size)`` for a read that most likely finds nothing yet: the answer to what was
    just sent, or the next request on a kept-alive connection.

    gevent's ``recv`` tries the read first and waits only when it fails: a failed system call
    and a raised and caught ``EWOULDBLOCK`` on every such read. Here a gevent socket waits for
    readability first (its own watcher, and its timeout as ``recv`` would use it), then reads.
    Other sockets (threads, tests) just read. Used for a kept-alive connection's next request,
    an upstream's answer just after the request went out, and a stream's next event.
    """
    watcher = getattr(sock, "_read_event", None)
    if watcher is not None and getattr(sock, "hub", None) is not None:
        _wait_readable(sock, watcher)
    return sock.recv(size)


def _wait_readable(sock: Any, watcher: Any) -> None:
    """What gevent's ``socket._wait(sock._read_event)`` does, with a bare loop timer for the
    socket's timeout instead of a ``gevent.Timeout`` (a Python object started, entered, exited
    and closed per wait: a tenth of a relayed stream's CPU when its reads wait chunk by chunk).
    The same outcome: ``socket.timeout`` (``TimeoutError``) raised in the waiting greenlet when
    the timeout passes first, ``ConcurrentObjectUseError`` when another greenlet already waits
    on the socket."""
    if watcher.callback is not None:
        raise ConcurrentObjectUseError(f"This socket is already used by another greenlet: {watcher.callback!r}")
    hub = sock.hub
    seconds = sock.timeout
    if seconds is None:
        hub.wait(watcher)
        return
    timer = hub.loop.timer(seconds)
    timer.start(_time_out, getcurrent(), update=True)
    try:
        hub.wait(watcher)
    finally:
        timer.close()


def _time_out(waiting: Any) -> None:
    waiting.throw(TimeoutError("timed out"))


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked HTTP/1.1 body (what gunicorn's ``util.write_chunk`` sends)."""
    return b"".join([b"%X\r\n" % len(data), data, b"\r\n"])
