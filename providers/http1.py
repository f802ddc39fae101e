"""A lean keep-alive HTTP/1.1 client: per-origin connection pools, requests, response framing.

What the upstream calls need and nothing else: ``POST`` with a body whose length is known,
responses framed by ``Content-Length``, chunked encoding or the connection's close, and
keep-alive. It replaced urllib3 + ``http.client`` on the request path, whose general
machinery (request line and headers built in several calls and sent apart from the body,
headers parsed by the ``email`` package, retry and timeout objects per call) was the
largest single cost of a request (docs/benchmark.md). Here a request is one ``send``
of a header block prebuilt per URL and headers plus the body, and the status line and
headers are parsed with a few bytes and string operations.

Sockets are the standard library's, so gunicorn's gevent worker (which monkey-patches
``socket`` and ``ssl``) makes every call cooperative.

- **TLS**: ``ssl.create_default_context()`` per origin (the system's CA store, or the
  file and folder named by ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, as urllib3 did),
  certificate and host name verified, SNI, ALPN ``http/1.1``.
- **Reuse**: a connection goes back to its origin's pool only when its response was read
  to the end, nothing more arrived, and the server did not say ``Connection: close``
  (HTTP/1.0 only with ``keep-alive``). Before reuse, a pooled connection is checked for a
  hang-up with one real ``poll(0)`` (gevent's cooperative ``poll`` would set up watchers
  and a timeout for a call that cannot block).
- **Stale connections**: when sending on a reused connection fails (the server closed it
  after the check), the request is sent once more on a fresh connection: nothing of it
  reached the server, so it cannot run twice. A failure after the request was sent is
  never retried (``POST`` is not idempotent: the provider may already be generating).
- **Addresses**: an IP-literal host is connected to without the resolver; a host name is
  resolved for each new connection (kept-alive connections need none).
- **Not supported**: proxies (``HTTP_PROXY`` and friends are ignored, as they were with
  urllib3's pool), redirects (a 3xx is returned to the caller, which treats it as an
  error), compressed bodies (requests say ``Accept-Encoding: identity``), HTTP/2.

Timeouts are the caller's: every socket read first calls the ``ReadGuard`` it is given,
which sets the socket's timeout to what is left of the caller's deadline
(providers/http.py ``_Deadline``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from gatewaysite.sockets import recv_expecting_wait

RECV_SIZE = 65536
MAX_HEAD = 65536  # status line and headers of one response; a chunk-size line must be much shorter
MAX_IDLE_PER_ORIGIN = 10_000  # as many as a worker's connections (8,000 streams each hold one to the same upstream)
USER_AGENT = "llm-gateway"

_poll_factory: Any = None


def _real_poll() -> Any:
    """``select.poll()`` as the OS provides it, even when gevent has patched ``select``."""
    global _poll_factory
    if _poll_factory is None:
        factory: Any = select.poll
        try:
            from gevent import monkey

            if monkey.is_module_patched("select"):
                factory = monkey.get_original("select", "poll")
        except ImportError:
            pass
        _poll_factory = factory
    return _poll_factory()


class ProtocolError(Exception):
    """The upstream broke HTTP/1.1, or the connection broke, in the middle of an exchange."""


class ConnectFailed(ConnectionError):
    """No connection could be opened (refused, unreachable, the name did not resolve)."""


class ReadGuard(Protocol):
    def before_read(self, sock: socket.socket) -> None:
        """Called before every socket read: sets the socket's timeout, or raises when time is up."""


class Holder(Protocol):
    """Who holds a connection while it is out of the pool (providers/http.py ``CancelScope``)."""

    def release(self, conn: Any) -> bool:
        """Forget ``conn``; True when it must be closed instead of pooled."""


class Connection:
    """One socket to an origin, with what was received on it and not consumed yet."""

    __slots__ = ("awaiting", "buf", "holder", "origin", "sock")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock: socket.socket | None = sock
        self.origin = origin
        self.buf = b""  # received and not consumed yet
        self.awaiting = False  # the next read waits before reading (a request just sent, a stream between events)
        self.holder: Holder | None = None

    def idle_ok(self) -> bool:
        """False when the peer closed (or sent something unasked): the connection is not reusable."""
        sock = self.sock
        if sock is None:
            return False
        poller = _real_poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)

    def fill(self, guard: ReadGuard | None) -> None:
        """Append the next bytes from the socket to ``buf``; the connection closing here is an error."""
        if not self.recv_more(guard):
            raise ProtocolError("the connection closed in the middle of the response")

    def take(self, most: int, guard: ReadGuard | None) -> bytes:
        """Up to ``most`` bytes of what was received (reading first when nothing is), consumed."""
        if not self.buf:
            self.fill(guard)
        buf = self.buf
        if len(buf) <= most:
            self.buf = b""
            return buf
        self.buf = buf[most:]
        return buf[:most]

    def find(
        self,
        separator: bytes,
        guard: ReadGuard | None,
        too_long: str,
        start: int = 0,
        closed: str = "the connection closed in the middle of the response",
    ) -> int:
        """Where ``separator`` is in ``buf`` (from ``start``), reading until it is there; at
        most ``MAX_HEAD`` bytes are read for it (``too_long`` past that, ``closed`` if the
        peer closes first)."""
        end = self.buf.find(separator, start)
        while end < 0:
            if len(self.buf) > MAX_HEAD:
                raise ProtocolError(too_long)
            if not self.recv_more(guard):
                raise ProtocolError(closed)
            end = self.buf.find(separator, start)
        return end

    def recv_more(self, guard: ReadGuard | None) -> bool:
        """Append the next bytes from the socket to ``buf``; False when the peer closed the connection."""
        sock = self.sock
        if sock is None:
            raise ProtocolError("the connection was closed")
        if guard is not None:
            guard.before_read(sock)
        try:
            if self.awaiting:
                self.awaiting = False
                data = recv_expecting_wait(sock, RECV_SIZE)
            else:
                data = sock.recv(RECV_SIZE)
        except TimeoutError:
            raise
        except OSError as exc:  # reset, or shut down by a cancellation
            raise ProtocolError(f"the connection broke ({type(exc).__name__})") from exc
        if not data:
            return False
        self.buf = self.buf + data if self.buf else data
        return True

    def close(self) -> None:
        sock, self.sock = self.sock, None
        holder, self.holder = self.holder, None
        if holder is not None:
            holder.release(self)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def release(self) -> None:
        """Back to the origin's pool (or closed, when its holder was cancelled or the pool is full)."""
        holder, self.holder = self.holder, None
        if holder is not None and holder.release(self):
            self.close()
            return
        self.origin.put(self)


def _literal_family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP-literal host; None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


class Origin:
    """One upstream ``scheme://host:port``: its idle connections (most recent last) and its TLS context."""

    def __init__(self, scheme: str, host: str, port: int, host_header: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.host_header = host_header
        self.idle: list[Connection] = []
        self.family = _literal_family(host)
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def take(self) -> Connection | None:
        """The most recently pooled connection that is still open, or None."""
        idle = self.idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # emptied by another thread meanwhile
                return None
            if conn.idle_ok():
                return conn
            conn.close()
        return None

    def put(self, conn: Connection) -> None:
        if conn.sock is not None and len(self.idle) < MAX_IDLE_PER_ORIGIN:
            self.idle.append(conn)
        else:
            conn.close()

    def tls_context(self) -> ssl.SSLContext:
        """Made on first use, after gevent's monkey patching (its ``SSLContext`` is then the cooperative one)."""
        if self._tls is None:
            with self._lock:
                if self._tls is None:
                    context = ssl.create_default_context()  # verifies the certificate and the host name
                    context.set_alpn_protocols(["http/1.1"])
                    self._tls = context
        return self._tls

    def connect(self, timeout: float) -> Connection:
        """A new connection (TLS handshake included) within ``timeout`` seconds."""
        try:
            sock = self._open(timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectFailed(f"could not connect to {self.host}:{self.port} ({type(exc).__name__})") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = self.tls_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return Connection(sock, self)

    def _open(self, timeout: float) -> socket.socket:
        """A connected TCP socket; an IP-literal host skips the resolver.

        ``getaddrinfo`` under gevent runs on the hub's thread pool: for each new stream
        (each holds its own connection) that hand-off cost more than the connection itself.
        """
        if self.family is None:
            return socket.create_connection((self.host, self.port), timeout)
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class Route:
    """What one URL needs: its origin and the start of its request (``POST path HTTP/1.1`` and ``Host``)."""

    __slots__ = ("origin", "request_line")

    def __init__(self, origin: Origin, request_line: bytes) -> None:
        self.origin = origin
        self.request_line = request_line


_origins: dict[tuple[str, str, int], Origin] = {}
_routes: dict[str, Route] = {}
_heads: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Route, bytes]] = {}
_origins_lock = threading.Lock()

# encoded in a request target: what is neither reserved nor unreserved (spaces, controls, non-ASCII)
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection"))  # this client's own


def route(url: str) -> Route:
    """The origin and request line for ``url`` (parsed once per URL)."""
    found = _routes.get(url)
    if found is not None:
        return found
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    default_port = port == (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if default_port else f"{shown}:{port}"
    key = (scheme, host, port)
    with _origins_lock:
        origin = _origins.get(key)
        if origin is None:
            origin = _origins[key] = Origin(scheme, host, port, host_header)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE)
    found = Route(origin, f"POST {target} HTTP/1.1\r\nhost: {host_header}\r\n".encode("latin-1"))
    if len(_routes) > 1024:
        _routes.clear()
    _routes[url] = found
    return found


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid HTTP header {name!r}")


def request_head(url: str, headers: Mapping[str, str], content_type: str) -> tuple[Route, bytes]:
    """The route and the request's header block up to ``content-length: `` (kept per URL and headers)."""
    key = (url, tuple(headers.items()))
    found = _heads.get(key)
    if found is not None:
        return found
    target = route(url)
    lines: dict[str, str] = {
        "content-type": f"content-type: {content_type}",
        "accept-encoding": "accept-encoding: identity",
        "user-agent": f"user-agent: {USER_AGENT}",
    }
    head = target.request_line
    for name, value in headers.items():
        value = str(value).strip()
        _check_header(name, value)
        lower = name.lower()
        if lower in _FRAMING:
            continue
        if lower == "host":  # the caller's Host replaces the URL's
            head = head.split(b"\r\n", 1)[0] + b"\r\n"
        lines[lower] = f"{name}: {value}"
    block = head + ("\r\n".join(lines.values()) + "\r\ncontent-length: ").encode("latin-1")
    if len(_heads) > 1024:
        _heads.clear()
    found = _heads[key] = (target, block)
    return found


def close_all() -> None:
    """Close every pooled connection (tests; a process about to exit)."""
    with _origins_lock:
        origins = list(_origins.values())
    for origin in origins:
        origin.close_idle()


def idle_connections(url: str) -> int:
    """How many connections to ``url``'s origin sit in the pool."""
    return len(route(url).origin.idle)


# --- responses ---------------------------------------------------------------------------

_NONE, _LENGTH, _CHUNKED, _CLOSE = 0, 1, 2, 3


class Response:
    """A response whose status line and headers were read; the body is read with ``read1``.

    ``headers`` maps lower-case names to values (repeated headers joined with ``, ``).
    """

    __slots__ = ("_conn", "_crlf", "_done", "_keep", "_left", "_mode", "guard", "headers", "status")

    def __init__(
        self, conn: Connection, status: int, headers: dict[str, str], mode: int, left: int, keep: bool
    ) -> None:
        self._conn: Connection | None = conn
        self.status = status
        self.headers = headers
        self._mode = mode
        self._left = left  # body bytes left (Content-Length), or of the current chunk
        self._keep = keep
        self._done = mode == _NONE or (mode == _LENGTH and left == 0)
        self._crlf = False  # a chunk's data was read, its CRLF not yet
        self.guard: ReadGuard | None = None

    def expect_wait(self) -> None:
        """The next read most likely finds nothing yet (a stream's next event): once what was
        received is used up (a chunk's CRLF may still be there), the next read waits for the
        socket first, then reads (``Connection.awaiting``)."""
        conn = self._conn
        if conn is not None:
            conn.awaiting = True

    def read1(self) -> bytes:
        """The next piece of the body, as soon as some is there; ``b""`` at its end."""
        if self._done:
            return b""
        conn = self._conn
        if conn is None:
            raise ProtocolError("the response was closed")
        mode = self._mode
        if mode == _LENGTH:
            data = conn.take(self._left, self.guard)
            self._left -= len(data)
            self._done = self._left == 0
            return data
        if mode == _CHUNKED:
            return self._read_chunk(conn)
        # close-delimited
        if not conn.buf and not conn.recv_more(self.guard):
            self._done = True
            return b""
        buf, conn.buf = conn.buf, b""
        return buf

    def _read_chunk(self, conn: Connection) -> bytes:
        if self._left:
            data = conn.take(self._left, self.guard)
            self._left -= len(data)
            self._crlf = self._left == 0
            return data
        # a chunk boundary: the previous chunk's CRLF, then the next chunk-size line
        start = 2 if self._crlf else 0
        end = conn.find(b"\r\n", self.guard, "a chunk-size line is too long", start)
        buf = conn.buf
        if start and buf[:2] != b"\r\n":
            raise ProtocolError("a chunk did not end with CRLF")
        try:
            size = int(buf[start:end].split(b";", 1)[0], 16)  # chunk extensions are ignored
        except ValueError:
            raise ProtocolError("invalid chunk size") from None
        if size < 0:
            raise ProtocolError("invalid chunk size")
        conn.buf = buf[end + 2 :]
        self._crlf = False
        if size:
            self._left = size
            return self._read_chunk(conn)
        while True:  # the last chunk: trailers (ignored) up to an empty line
            end = conn.find(b"\r\n", self.guard, "trailers are too long")
            line = conn.buf[:end]
            conn.buf = conn.buf[end + 2 :]
            if not line:
                self._done = True
                return b""

    def close(self) -> None:
        """Close the connection: the response is abandoned (unread data, an error, a stall)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def release_conn(self) -> None:
        """Pool the connection when the response was read to its end and may be followed by another; else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep and not conn.buf:
            conn.release()
        else:
            conn.close()


def read_response(conn: Connection, guard: ReadGuard | None) -> Response:
    """Read the status line and headers of the response to the request just sent on ``conn``."""
    while True:
        end = conn.find(
            b"\r\n\r\n",
            guard,
            "the response's headers are too long",
            closed="the server closed the connection without a response",
        )
        head = conn.buf[:end].decode("latin-1")
        conn.buf = conn.buf[end + 4 :]
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ProtocolError("a header line without a colon")
            name = name.lower()
            value = value.strip()
            if name in headers:
                headers[name] += ", " + value
            else:
                headers[name] = value
        if 100 <= status < 200:  # 100 Continue and other interim responses: the real one follows
            continue
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep = "close" not in connection
        else:
            keep = "keep-alive" in connection
        if status in (204, 304):
            return Response(conn, status, headers, _NONE, 0, keep)
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                return Response(conn, status, headers, _CHUNKED, 0, keep)
            return Response(conn, status, headers, _CLOSE, 0, False)
        length = headers.get("content-length")
        if length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1:
                raise ProtocolError("conflicting Content-Length headers")
            try:
                size = int(values.pop())
            except ValueError:
                raise ProtocolError("invalid Content-Length") from None
            if size < 0:
                raise ProtocolError("invalid Content-Length")
            return Response(conn, status, headers, _LENGTH, size, keep)
        return Response(conn, status, headers, _CLOSE, 0, False)
