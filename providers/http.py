"""The pooled HTTP client every adapter uses, and server-sent-event parsing.

urllib3 directly, not requests: the same connection pool without requests' session,
adapter and hook layers on every call (the upstream call's share of a request's CPU is
in docs/benchmark.md). Under gunicorn's gevent worker urllib3 is cooperative.

Two costs of the general-purpose path are cut (measured in docs/benchmark.md):
- checking a pooled connection for a hang-up before reuse is one ``poll(0)`` system
  call on the real ``select.poll``; gevent's cooperative ``poll`` sets up watchers and a
  timeout for what cannot block (about a tenth of a request's CPU otherwise);
- each URL's connection pool and request path are looked up once, not parsed and
  normalized by the ``PoolManager`` on every call.

Deadlines. ``read_timeout`` bounds one read from the socket, so an upstream sending a
byte every half second would hold a request for ever. On top of it, each provider has
a deadline for a whole non-streaming response (``response_timeout``), for a stream's
first event (``first_chunk_timeout``) and between two stream events
(``stream_idle_timeout``). They are enforced the same way under gevent and under plain
threads: before every read the socket timeout is set to what is left of the deadline
(never more than ``read_timeout``), and the deadline is checked after every read. The
status line and headers are read by ``http.client`` in many small reads; under gevent a
``gevent.Timeout`` also bounds that phase as a whole. A deadline that passes raises
``UpstreamError`` 504 ``upstream_timeout`` (retryable: the next deployment is tried if
nothing reached the client yet) and closes the connection: it is never reused.

Cancellation (hedged requests, routing/services/hedging.py). An attempt run inside a
``CancelScope`` (``with cancel_scope(scope):``) has every connection it takes from a
pool registered there; ``scope.cancel()``, from another greenlet or thread, shuts those
sockets down, which wakes the attempt's blocked read with an error. Its connection is
then closed by urllib3 / ``read_body`` / ``iter_sse`` like any broken one, and one
released into the pool after the cancellation is closed instead: a cancelled attempt's
connection never goes back to the pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import select
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from gatewaysite.clock import monotonic
from providers.adapters.base import Target, UpstreamError, error_for_status, retry_after_seconds

_poll_factory: Callable[[], Any] | None = None
_gevent_timeout: Any = None  # gevent.Timeout when this process runs under gevent's monkey patching, else False


def _real_poll() -> Any:
    """``select.poll()`` as the OS provides it, even when gevent has patched ``select``."""
    global _poll_factory
    if _poll_factory is None:
        factory = select.poll
        try:
            from gevent import monkey

            if monkey.is_module_patched("select"):
                factory = monkey.get_original("select", "poll")
        except ImportError:
            pass
        _poll_factory = factory
    return _poll_factory()


class _IdleCheck:
    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]  # a mixin: urllib3's connection class comes after it
        scope = _current_scope.get()
        if scope is not None and scope.cancelled:  # cancelled while connecting: the socket was not there to cut
            self.close()  # type: ignore[attr-defined]  # urllib3's connection, mixed in
            raise AttemptCancelled("the attempt was cancelled")

    @property
    def is_connected(self) -> bool:
        """False when the peer closed (or sent something unasked): the connection is not reusable."""
        if self.sock is None:
            return False
        poller = _real_poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)


class _HTTPConnection(_IdleCheck, HTTPConnection):
    pass


class _HTTPSConnection(_IdleCheck, HTTPSConnection):
    pass


class AttemptCancelled(ConnectionError):
    """The attempt's scope was cancelled (a hedged request's other attempt answered first)."""


class CancelScope:
    """The pooled connections one upstream attempt holds, so that another greenlet can cut them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self._connections: set[Any] = set()

    def hold(self, conn: Any) -> bool:
        """Register ``conn``; False when the scope is already cancelled."""
        with self.lock:
            if self.cancelled:
                return False
            self._connections.add(conn)
            return True

    def release(self, conn: Any) -> bool:
        """Forget ``conn`` (going back to the pool); True when it must be closed instead."""
        with self.lock:
            self._connections.discard(conn)
            return self.cancelled

    def cancel(self) -> int:
        """Shut down every connection held; returns how many were cut."""
        with self.lock:
            self.cancelled = True
            connections, self._connections = list(self._connections), set()
        cut = 0
        for conn in connections:
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
                cut += 1
            except OSError:
                pass  # already closed
        return cut


_current_scope: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar("upstream_scope", default=None)


@contextlib.contextmanager
def cancel_scope(scope: CancelScope) -> Iterator[CancelScope]:
    token = _current_scope.set(scope)
    try:
        yield scope
    finally:
        _current_scope.reset(token)


class _ScopedPool:
    """Registers connections taken inside a ``CancelScope``; closes those released after it was cancelled."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]  # a mixin: urllib3's pool comes after it
        scope = _current_scope.get()
        if scope is not None and not scope.hold(conn):
            conn.close()
            self._put_conn(None)
            raise AttemptCancelled("the attempt was cancelled")
        return conn

    def _put_conn(self, conn: Any) -> None:
        scope = _current_scope.get()
        if conn is not None and scope is not None and scope.release(conn):
            conn.close()
            conn = None
        super()._put_conn(conn)  # type: ignore[misc]  # a mixin: urllib3's pool comes after it


class _HTTPPool(_ScopedPool, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_ScopedPool, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# maxsize: connections kept per upstream; thousands of concurrent streams each hold one.
_pool = urllib3.PoolManager(num_pools=64, maxsize=4096, block=False, retries=False)
_pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
_routes: dict[str, tuple[HTTPConnectionPool, str]] = {}


def pool() -> urllib3.PoolManager:
    return _pool


def _route(url: str) -> tuple[HTTPConnectionPool, str]:
    """The connection pool and request path for ``url`` (looked up once per URL)."""
    route = _routes.get(url)
    if route is None or route[0].pool is None:  # unknown, or closed by the manager's LRU
        if len(_routes) > 256:
            _routes.clear()
        route = (_pool.connection_from_url(url), urllib3.util.parse_url(url).request_uri)
        _routes[url] = route
    return route


def _cooperative_timeout() -> Any:
    """``gevent.Timeout`` when sockets are gevent's (the production worker), else None."""
    global _gevent_timeout
    if _gevent_timeout is None:
        _gevent_timeout = False
        try:
            from gevent import Timeout, monkey

            if monkey.is_module_patched("socket"):
                _gevent_timeout = Timeout
        except ImportError:
            pass
    return _gevent_timeout or None


class DeadlineExceeded(TimeoutError):
    """A deadline of the gateway passed while reading from the upstream (not one read's timeout)."""


class _Deadline:
    """A moment by which a sequence of socket reads must be done."""

    __slots__ = ("at", "read_timeout", "seconds", "what")

    def __init__(self, seconds: float, read_timeout: float, what: str) -> None:
        self.seconds = seconds
        self.at = monotonic() + seconds
        self.read_timeout = read_timeout
        self.what = what

    def restart(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.at = monotonic() + seconds
        self.what = what

    def remaining(self) -> float:
        left = self.at - monotonic()
        if left <= 0:
            raise DeadlineExceeded(self.what)
        return left

    def before_read(self, response: urllib3.BaseHTTPResponse) -> None:
        """Let the next socket read wait no longer than what is left (and than ``read_timeout``)."""
        left = self.remaining()
        connection = response.connection
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(self.read_timeout, left))

    def error(self, target: Target) -> UpstreamError:
        return UpstreamError(
            f"{target.provider}: {self.what} within {self.seconds:g} s", status=504, code="upstream_timeout"
        )


def _deadline_of(response: urllib3.BaseHTTPResponse) -> _Deadline | None:
    return getattr(response, "gateway_deadline", None)


def _transport_error(target: Target, exc: Exception) -> UpstreamError:
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError):
        return UpstreamError(f"{target.provider}: timed out", status=504, code="upstream_timeout")
    if isinstance(exc, NewConnectionError | ConnectionError):
        return UpstreamError(f"{target.provider}: could not connect", status=502, code="upstream_unreachable")
    return UpstreamError(f"{target.provider}: connection failed ({type(exc).__name__})", status=502)


def error_message(payload: bytes) -> str:
    """The human message of a provider's JSON error body, if it has one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode("utf-8", "replace").strip()
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or "")[:500]
        if isinstance(error, str):
            return error[:500]
    return ""


def post_json(
    target: Target, url: str, payload: Mapping[str, Any], headers: Mapping[str, str], *, stream: bool = False
) -> urllib3.BaseHTTPResponse:
    """POST JSON; returns the response for 2xx (body not read yet), raises ``UpstreamError`` otherwise.

    The response carries its deadline (``gateway_deadline``): the whole answer's for a
    non-streaming call (``read_json`` reads the body within it), the first event's for a
    stream (``iter_sse``).
    """
    if stream:
        deadline = _Deadline(target.first_chunk_timeout, target.read_timeout, "sent no stream event")
    else:
        deadline = _Deadline(target.response_timeout, target.read_timeout, "did not finish its answer")
    guard = _cooperative_timeout()
    timer = guard(deadline.seconds, DeadlineExceeded(deadline.what)) if guard is not None else None
    try:
        connection_pool, path = _route(url)
        if timer is not None:
            timer.start()
        response = connection_pool.urlopen(
            "POST",
            path,
            body=orjson.dumps(payload),
            headers={"content-type": "application/json", **headers},
            timeout=urllib3.Timeout(
                connect=min(target.connect_timeout, deadline.seconds), read=min(target.read_timeout, deadline.seconds)
            ),
            preload_content=False,
            redirect=False,
            retries=False,
            assert_same_host=False,
        )
    except (HTTPError, OSError) as exc:
        if deadline.at <= monotonic():
            raise deadline.error(target) from None
        raise _transport_error(target, exc) from None
    finally:
        if timer is not None:
            timer.close()
    response.gateway_deadline = deadline  # type: ignore[attr-defined]  # the gateway's own attribute, read by _deadline_of
    if response.status >= 300:
        try:
            body = read_body(target, response)
        except UpstreamError:
            body = b""
        # The message may quote the request back; ProviderAdapter redacts every error on its way out.
        raise error_for_status(
            target.provider,
            response.status,
            error_message(body),
            retry_after=retry_after_seconds(response.headers),
        )
    return response


def _chunks(response: urllib3.BaseHTTPResponse, deadline: _Deadline | None) -> Iterator[bytes]:
    """The body as it arrives, each socket read waiting no longer than ``deadline`` leaves."""
    while True:
        if deadline is not None:
            deadline.before_read(response)
        chunk = response.read1(65536)
        if not chunk:
            return
        yield chunk


def _read_error(target: Target, deadline: _Deadline | None, exc: Exception) -> UpstreamError:
    """A read that failed: the deadline's 504 once it has passed, else what the transport error means."""
    if deadline is not None and deadline.at <= monotonic():
        return deadline.error(target)
    return _transport_error(target, exc)


def read_body(target: Target, response: urllib3.BaseHTTPResponse) -> bytes:
    """The whole body, read within the response's deadline; the connection goes back to the pool."""
    deadline = _deadline_of(response)
    parts: list[bytes] = []
    finished = False
    try:
        for chunk in _chunks(response, deadline):
            parts.append(chunk)
        finished = True
    except DeadlineExceeded:
        raise deadline.error(target) from None  # type: ignore[union-attr]  # only a deadline raises DeadlineExceeded
    except (HTTPError, OSError) as exc:
        raise _read_error(target, deadline, exc) from None
    finally:
        if not finished:  # unread data, or a stalled peer: the connection is closed, never reused
            response.close()
        response.release_conn()
    return b"".join(parts)


def read_json(target: Target, response: urllib3.BaseHTTPResponse) -> Any:
    try:
        return orjson.loads(read_body(target, response))
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{target.provider}: answered with invalid JSON", status=502) from None


def iter_sse(target: Target, response: urllib3.BaseHTTPResponse) -> Iterator[tuple[str | None, bytes]]:
    """Yield ``(event, data)`` for each server-sent event of a streaming response.

    The first event must come within the provider's ``first_chunk_timeout`` of the
    request, each next one within ``stream_idle_timeout`` of the previous (time spent
    waiting on the client in between does not count).
    """
    deadline = _deadline_of(response)
    buffer = b""
    event: str | None = None
    data_lines: list[bytes] = []
    finished = False
    try:
        for chunk in _chunks(response, deadline):
            buffer += chunk
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    break
                line = buffer[:newline].rstrip(b"\r")
                buffer = buffer[newline + 1 :]
                if not line:
                    if data_lines:
                        yield event, b"\n".join(data_lines)
                        if deadline is not None:
                            deadline.restart(target.stream_idle_timeout, "let the stream stall: no event")
                    event, data_lines = None, []
                elif line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                # comments (":") and other fields are ignored
        if data_lines:
            yield event, b"\n".join(data_lines)
        finished = True
    except DeadlineExceeded:
        raise deadline.error(target) from None  # type: ignore[union-attr]  # only a deadline raises DeadlineExceeded
    except (HTTPError, OSError, ProtocolError) as exc:
        error = _read_error(target, deadline, exc)
        if error.status != 504:  # the connection broke mid-stream: the answer is cut short
            error = UpstreamError(
                f"{target.provider}: the stream was cut, the connection broke ({type(exc).__name__})",
                status=502,
                code="upstream_truncated",
            )
        raise error from None
    finally:
        if not finished:  # stopped early: the connection holds unread data, so it cannot be reused
            response.close()
        response.release_conn()
