"""gunicorn's HTTP/1 response writer, with two per-response costs removed.

Installed in each worker by ``post_worker_init`` (``gatewaysite/gunicorn.conf.py``); the
bytes on the wire are the same, only how they get there changes:

- The status line and headers go out with the first body write, in one ``sendall``.
  gunicorn writes them on their own first, so every answer cost two sends (two system
  calls and two passes through gevent's socket wrapper) where one does. When no body
  follows (an empty answer, ``HEAD``), or a file is sent with ``sendfile``, the headers
  are written as before.
- Each write is one ``send`` when the socket takes it all (it nearly always does): gevent's
  ``sendall`` first asks the kernel for the socket's send buffer size
  (``getsockopt``), one more system call per write, per response and per stream chunk.
- The ``Date`` header is formatted once per second instead of once per response
  (``email.utils.formatdate`` is several Python calls, and its value only changes each
  second).

Both patch gunicorn (pinned in constraints.txt) at documented seams: ``Response`` is
looked up by ``gunicorn.http.wsgi.create`` at each request, ``_emit_body`` is the one
place the body is put on the wire, ``util.http_date`` is what ``default_headers`` calls.
Measured in docs/benchmark.md.
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

_original_http_date = util.http_date
_date_cache: tuple[int, str] = (-1, "")


def http_date(timestamp: float | None = None) -> str:
    """``util.http_date``, formatted once per second for the current time (the header has whole seconds)."""
    global _date_cache
    if timestamp is not None:
        return str(_original_http_date(timestamp))
    second = int(time.time())
    cached_second, text = _date_cache
    if cached_second != second:
        text = str(_original_http_date(second))
        _date_cache = (second, text)
    return text


def _send_all(sock: Any, data: bytes) -> None:
    """``sock.sendall(data)``: one ``send``, and ``sendall`` for the rest when it took less."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


class CoalescingResponse(wsgi.Response):  # type: ignore[misc]  # gunicorn has no type hints
    """Holds the status line and headers while ``write`` runs, and sends them with the body."""

    _holding = False
    _held: bytes | None = None

    def send_headers(self) -> None:
        if not self._holding or self.headers_sent:
            super().send_headers()
            return
        # gunicorn's send_headers, kept instead of written (wsgi.Response.send_headers)
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])  # noqa: UP031 - as gunicorn builds them
        self._held = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")  # noqa: UP031
        self.headers_sent = True

    def write(self, arg: Any) -> None:
        if self.headers_sent:
            super().write(arg)
            return
        self._holding = True
        try:
            super().write(arg)  # send_headers holds them; _emit_body sends them with the body
        finally:
            self._holding = False
            held, self._held = self._held, None
            if held is not None:  # no body went out (HEAD, an empty write, an error): headers alone
                util.write(self.sock, held)

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"".join([b"%X\r\n" % len(data), data, b"\r\n"])  # util.write_chunk's framing
        held, self._held = self._held, None
        if held is not None:
            data = held + data
        _send_all(self.sock, data)


def install() -> None:
    wsgi.Response = CoalescingResponse
    util.http_date = http_date
