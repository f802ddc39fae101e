"""gunicorn's per-request work in a worker, with costs that repeat for nothing removed.

Installed in each worker by ``post_worker_init`` (``gatewaysite/gunicorn.conf.py``); what
gunicorn does and the bytes on the wire are the same, only how it gets there changes:

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
- The worker reads its settings from plain attributes: gunicorn's ``Config`` answers each
  ``cfg.<setting>`` through ``__getattr__`` and the setting object, about thirty times
  per request (parser limits, hooks, the access-log check). A worker's settings never
  change while it runs (a reload starts new workers), so they are copied once.
- Whether the peer may send forwarding headers (``FORWARDED_ALLOW_IPS``) is decided once
  per peer address, not parsed with ``ipaddress`` on every request.

All of it patches gunicorn (pinned in constraints.txt) at seams it looks up at each
request: ``wsgi.Response`` (by ``wsgi.create``), ``_emit_body`` (the one place the body is
put on the wire), ``util.http_date`` (by ``default_headers``), ``message._ip_in_allow_list``.
Measured in docs/benchmark.md.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]  # no type hints
from gunicorn.http import message, wsgi  # type: ignore[import-untyped]

from gatewaysite.sockets import chunk, send_all

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


class CoalescingResponse(wsgi.Response):
    """Holds the status line and headers while ``write`` runs, and sends them with the body."""

    headers_sent: bool  # gunicorn's, set in its __init__
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
            data = chunk(data)
        held, self._held = self._held, None
        if held is not None:
            data = held + data
        send_all(self.sock, data)


_original_ip_in_allow_list = message._ip_in_allow_list
_peer_verdicts: dict[tuple[str, tuple[str, ...]], bool] = {}
_PEER_VERDICTS_MAX = 4096  # distinct client addresses remembered; forgotten all at once past it


def ip_in_allow_list(ip_str: str, allow_list: list[str], networks: list[Any]) -> bool:
    """``message._ip_in_allow_list``, remembered per (address, allow list): ``networks`` is
    derived from ``allow_list`` by the configuration, which does not change in a worker."""
    key = (ip_str, tuple(allow_list))
    verdict = _peer_verdicts.get(key)
    if verdict is None:
        verdict = bool(_original_ip_in_allow_list(ip_str, allow_list, networks))
        if len(_peer_verdicts) >= _PEER_VERDICTS_MAX:
            _peer_verdicts.clear()
        _peer_verdicts[key] = verdict
    return verdict


def frozen_config(cfg: Any) -> Any:
    """A copy of gunicorn's ``Config`` whose settings are plain instance attributes.

    Lookups then find them before ``Config.__getattr__`` runs; the class's properties
    (``is_ssl``, ``sendfile``, ...) are data descriptors and still win, computed as before
    from the shared ``settings``.
    """
    frozen = copy.copy(cfg)
    frozen.__dict__.update({name: setting.get() for name, setting in cfg.settings.items()})
    return frozen


def install(worker: Any | None = None) -> None:
    util.http_date = http_date
    message._ip_in_allow_list = ip_in_allow_list
    if worker is not None:
        worker.cfg = frozen_config(worker.cfg)
        if getattr(worker, "log", None) is not None and getattr(worker.log, "cfg", None) is not None:
            worker.log.cfg = worker.cfg
    # _emit_body (gunicorn 27) is the seam the held headers go out through; without it they would
    # follow the body, so an older gunicorn keeps its own writer.
    if hasattr(wsgi.Response, "_emit_body"):
        wsgi.Response = CoalescingResponse
