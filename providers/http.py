"""The upstream calls every adapter makes (``post_json``, ``read_json``, ``iter_sse``), their deadlines and cancellation.

The wire is providers/http1.py: a lean keep-alive HTTP/1.1 client with a pool of
connections per upstream origin (one ``send`` per request of a header block prebuilt
per URL and headers; status line and headers parsed with bytes and string operations).
It replaced urllib3 + ``http.client``, the largest single cost of a request in the
profile (docs/benchmark.md). Under gunicorn's gevent worker its sockets are gevent's.
Proxies are not supported and redirects are not followed (a 3xx is an upstream error),
as before with urllib3's pool.

Deadlines. ``read_timeout`` bounds one read from the socket, so an upstream sending a
byte every half second would hold a request for ever. On top of it, each provider has
a deadline for a whole non-streaming response (``response_timeout``), for a stream's
first event (``first_chunk_timeout``) and between two stream events
(``stream_idle_timeout``). They are enforced the same way under gevent and under plain
threads: before every socket read (the status line and headers included) the socket
timeout is set to what is left of the deadline (never more than ``read_timeout``), and
the deadline is checked after every read. A deadline that passes raises
``UpstreamError`` 504 ``upstream_timeout`` (retryable: the next deployment is tried if
nothing reached the client yet) and closes the connection: it is never reused.

Cancellation (hedged requests, routing/services/hedging.py). An attempt run inside a
``CancelScope`` (``with cancel_scope(scope):``) has every connection it takes from a
pool (or opens) registered there; ``scope.cancel()``, from another greenlet or thread,
shuts those sockets down, which wakes the attempt's blocked read with an error. Its
connection is then closed like any broken one, and one released after the cancellation
is closed instead of pooled: a cancelled attempt's connection never goes back to the pool.

Errors map to ``UpstreamError`` as docs/providers.md ("Errors and retries") says: a
timeout (connect or read) is 504 ``upstream_timeout``, a connection that cannot be
opened is 502 ``upstream_unreachable``, a connection that breaks or an answer that is not
HTTP is 502 ``upstream_error``; mid-stream, 502 ``upstream_truncated``.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from gatewaysite.clock import monotonic
from gatewaysite.sockets import send_all
from providers.adapters.base import Target, UpstreamError, error_for_status, retry_after_seconds
from providers.http1 import Connection, Origin, ProtocolError, Response, read_response, request_head

__all__ = [
    "AttemptCancelled",
    "CancelScope",
    "Response",
    "cancel_scope",
    "error_message",
    "iter_sse",
    "post_json",
    "read_body",
    "read_json",
]


class AttemptCancelled(ConnectionError):
    """The attempt's scope was cancelled (a hedged request's other attempt answered first)."""


class CancelScope:
    """The connections one upstream attempt holds, so that another greenlet can cut them."""

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
        """Forget ``conn`` (going back to the pool, or closed); True when it must be closed instead of pooled."""
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


class DeadlineExceeded(TimeoutError):
    """A deadline of the gateway passed while reading from the upstream (not one read's timeout)."""


class _Deadline:
    """A moment by which a sequence of socket reads must be done (the ``ReadGuard`` of providers/http1.py)."""

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

    def before_read(self, sock: socket.socket) -> None:
        """Let the next socket read wait no longer than what is left (and than ``read_timeout``)."""
        left = self.remaining()
        sock.settimeout(left if left < self.read_timeout else self.read_timeout)

    def error(self, target: Target) -> UpstreamError:
        return UpstreamError(
            f"{target.provider}: {self.what} within {self.seconds:g} s", status=504, code="upstream_timeout"
        )


def _transport_error(target: Target, exc: BaseException) -> UpstreamError:
    if isinstance(exc, TimeoutError):
        return UpstreamError(f"{target.provider}: timed out", status=504, code="upstream_timeout")
    if isinstance(exc, ConnectionError):
        return UpstreamError(f"{target.provider}: could not connect", status=502, code="upstream_unreachable")
    name = "SSLError" if isinstance(exc, ssl.SSLError) else "ProtocolError"
    return UpstreamError(f"{target.provider}: connection failed ({name})", status=502)


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


_RETRY_ON_FRESH = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError)


def _exchange(origin: Origin, request: bytes, target: Target, deadline: _Deadline) -> Response:
    """Send ``request`` on a pooled (else new) connection and read the response's head.

    A pooled connection that turns out closed when the request is sent (the server hung up
    after the idle check) is replaced once by a new one: nothing reached the server.
    """
    scope = _current_scope.get()
    conn: Connection | None = origin.take()
    while True:
        reused = conn is not None
        if conn is None:
            timeout = deadline.remaining()
            conn = origin.connect(target.connect_timeout if target.connect_timeout < timeout else timeout)
        if scope is not None:
            if not scope.hold(conn):  # cancelled before (or while connecting): nothing to cut, nothing sent
                conn.close()
                raise AttemptCancelled("the attempt was cancelled")
            conn.holder = scope
        sock = conn.sock
        assert sock is not None  # a connection just taken or opened
        try:
            deadline.before_read(sock)  # sending waits no longer than a read may
            send_all(sock, request)
            conn.awaiting = True
        except TimeoutError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            if reused and isinstance(exc, _RETRY_ON_FRESH) and not (scope is not None and scope.cancelled):
                conn = None
                continue
            raise ProtocolError(f"sending the request failed ({type(exc).__name__})") from exc
        try:
            return read_response(conn, deadline)
        except BaseException:
            conn.close()
            raise


def post_json(
    target: Target, url: str, payload: Mapping[str, Any], headers: Mapping[str, str], *, stream: bool = False
) -> Response:
    """POST JSON; returns the response for 2xx (body not read yet), raises ``UpstreamError`` otherwise.

    The response carries its deadline (``guard``): the whole answer's for a non-streaming
    call (``read_json`` reads the body within it), the first event's for a stream
    (``iter_sse``).
    """
    if stream:
        deadline = _Deadline(target.first_chunk_timeout, target.read_timeout, "sent no stream event")
    else:
        deadline = _Deadline(target.response_timeout, target.read_timeout, "did not finish its answer")
    route, head = request_head(url, headers, "application/json")
    body = orjson.dumps(payload)
    try:
        response = _exchange(route.origin, b"%b%d\r\n\r\n%b" % (head, len(body), body), target, deadline)
    except DeadlineExceeded:
        raise deadline.error(target) from None
    except (ProtocolError, OSError) as exc:
        if deadline.at <= monotonic():
            raise deadline.error(target) from None
        raise _transport_error(target, exc) from None
    response.guard = deadline
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


def _deadline_of(response: Response) -> _Deadline | None:
    guard = response.guard
    return guard if isinstance(guard, _Deadline) else None


def _read_error(target: Target, deadline: _Deadline | None, exc: BaseException) -> UpstreamError:
    """A read that failed: the deadline's 504 once it has passed, else what the transport error means."""
    if deadline is not None and deadline.at <= monotonic():
        return deadline.error(target)
    return _transport_error(target, exc)


def read_body(target: Target, response: Response) -> bytes:
    """The whole body, read within the response's deadline; the connection goes back to the pool."""
    deadline = _deadline_of(response)
    parts: list[bytes] = []
    finished = False
    try:
        while chunk := response.read1():
            parts.append(chunk)
        finished = True
    except DeadlineExceeded:
        raise deadline.error(target) from None  # type: ignore[union-attr]  # only a deadline raises DeadlineExceeded
    except (ProtocolError, OSError) as exc:
        raise _read_error(target, deadline, exc) from None
    finally:
        if not finished:  # unread data, or a stalled peer: the connection is closed, never reused
            response.close()
        response.release_conn()
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_json(target: Target, response: Response) -> Any:
    try:
        return orjson.loads(read_body(target, response))
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{target.provider}: answered with invalid JSON", status=502) from None


def iter_sse(target: Target, response: Response) -> Iterator[tuple[str | None, bytes]]:
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
        while chunk := response.read1():
            buffer = buffer + chunk if buffer else chunk
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
                        if not buffer:
                            response.expect_wait()  # the next event is likely still on its way
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
    except (ProtocolError, OSError) as exc:
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
