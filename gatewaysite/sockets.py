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


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked HTTP/1.1 body (what gunicorn's ``util.write_chunk`` sends)."""
    return b"".join([b"%X\r\n" % len(data), data, b"\r\n"])
