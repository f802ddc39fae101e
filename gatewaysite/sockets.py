"""Socket writes shared by the server side (gatewaysite/http_server.py, gatewaysite/gunicorn_worker.py) and the
upstream client (providers/http.py)."""

from __future__ import annotations

from typing import Any


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
    Other sockets (threads, tests) just read.
    """
    wait = getattr(sock, "_wait", None)
    if wait is not None:
        wait(sock._read_event)
    return sock.recv(size)


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked HTTP/1.1 body (what gunicorn's ``util.write_chunk`` sends)."""
    return b"".join([b"%X\r\n" % len(data), data, b"\r\n"])
