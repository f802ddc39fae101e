"""The production server's connection handler: gunicorn's gevent worker, with HTTP/1.1 done here.

gunicorn stays the process manager (master, worker lifecycle, heartbeats, graceful
shutdown, ``max_requests``, configuration, error and access logs); :class:`GatewayWorker`
only replaces what happens on each client connection. gunicorn's own handler parses
requests in pure Python and builds several objects per request (the parser's message
and body readers, a ``Response``, a ``gevent.Timeout`` for the keep-alive wait, a fresh
``wsgi.errors`` wrapper); profiled at 16 connections on ``POST /v1/chat/completions`` that
was ~18% of a request's CPU, the parsing alone ~5%. Here:

- Requests are parsed by ``httptools`` (llhttp, Node.js's C parser, as uvicorn uses it):
  one ``recv`` feeds the parser, whose callbacks collect the URL, the headers and the
  body pieces of each request; pipelined requests queue up behind the one being served.
- The environ is built directly from the parsed headers, from a per-connection template.
- The response (status line, headers and the first body bytes) goes out in one ``send``;
  later body writes are one ``send`` each (a streamed chunk is on the wire at once).
- The keep-alive wait is a socket timeout, not a ``gevent.Timeout`` per request.
- The access log is skipped entirely when it is off.

What the client and the application see is gunicorn's behaviour, which tests check
against the live server (tests/test_http_server.py): keep-alive and HTTP/1.0 rules, the
``Connection`` header gunicorn would send, the request limits (``limit_request_line`` ->
414, ``limit_request_fields`` and ``limit_request_field_size`` -> 431), 400 for malformed
input (including ``Content-Length`` with ``Transfer-Encoding``, a repeated
``Content-Length``, ``Host`` or ``Content-Type``, a ``Transfer-Encoding`` not ending in
``chunked``), 501 for an unknown transfer coding, 417 for an unknown expectation, header
names with ``_`` dropped (``header_map = "drop"``), forwarded scheme headers only from
``forwarded_allow_ips``, ``Expect: 100-continue`` answered before the body is read, an
unread body drained before the next request, chunked responses when the application
gives no length, no body for ``HEAD``/1xx/204/304, a 500 page for an error before the
response started and a closed connection for one after. Differences: a method llhttp does
not know (it knows the standard ones, WebDAV's and a few more) is a 400 where gunicorn
passes any upper-case token to the application (which answers 405); no
``wsgi.early_hints``; no ``sendfile`` (a file response is sent by reading it). TLS, the PROXY protocol,
HTTP/2 and gunicorn's lenient-parsing settings are served by gunicorn's own handler
(:meth:`GatewayWorker.handle` hands such connections to it).

Selected in gatewaysite/gunicorn.conf.py; ``GUNICORN_WORKER_CLASS=gevent`` runs gunicorn's
own worker instead. Measured in docs/benchmark.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections import deque
from datetime import timedelta
from typing import Any

import gevent
import httptools
from gunicorn import SERVER, SERVER_SOFTWARE, util  # type: ignore[import-untyped]  # no type hints
from gunicorn.config import PostRequest, PreRequest  # type: ignore[import-untyped]
from gunicorn.http.errors import (  # type: ignore[import-untyped]
    ConfigurationProblem,
    ExpectationFailed,
    InvalidHeader,
    InvalidHeaderName,
    InvalidHTTPVersion,
    InvalidRequestLine,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    InvalidSchemeHeaders,
    LimitRequestHeaders,
    LimitRequestLine,
    NoMoreData,
    UnsupportedTransferCoding,
)
from gunicorn.http.message import TOKEN_RE  # type: ignore[import-untyped]
from gunicorn.http.wsgi import HEADER_VALUE_RE, STATUS_RE, FileWrapper, WSGIErrorsWrapper  # type: ignore[import-untyped]
from gunicorn.workers.ggevent import GeventWorker  # type: ignore[import-untyped]

from gatewaysite.gunicorn_worker import http_date, ip_in_allow_list
from gatewaysite.sockets import chunk, recv_expecting_wait, send_all

RECV_SIZE = 64 * 1024
#: gunicorn's bounds (gunicorn/http/message.py): the request line is capped at 8190 bytes.
MAX_REQUEST_LINE = 8190
MAX_HEADERS = 32768
DEFAULT_MAX_HEADERFIELD_SIZE = 8190
#: Unread body bytes read and dropped before the next request; past it the connection closes.
DRAIN_MAX_BYTES = 8 * 1024 * 1024
#: Distinct header names remembered (request and response); names past it are classified each time.
NAME_CACHE_MAX = 2048
CLIENT_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# request header kinds: what prepare() does beyond copying the header into the environ
PLAIN, HOST, CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, EXPECT, UNDERSCORE = range(8)
_REQUEST_KINDS = {
    "HOST": HOST,
    "CONTENT-TYPE": CONTENT_TYPE,
    "CONTENT-LENGTH": CONTENT_LENGTH,
    "TRANSFER-ENCODING": TRANSFER_ENCODING,
    "CONNECTION": CONNECTION,
    "EXPECT": EXPECT,
}
# response header kinds (gunicorn's Response.process_headers)
R_PLAIN, R_LENGTH, R_CONNECTION, R_UPGRADE, R_HOP = range(5)


class ParsedRequest:
    """One request as the parser delivers it, then as the application's server sees it.

    The attributes gunicorn's ``Request`` has that its error page, access log and hooks
    read (``method``, ``uri``, ``path``, ``query``, ``version``, ``headers``, ``body``) are
    set by :meth:`GatewayWorker.prepare`.
    """

    __slots__ = (
        "url",
        "url_size",
        "raw_headers",
        "headers_done",
        "complete",
        "chunks",
        "buffered",
        "error",
        "method_bytes",
        "version_text",
        "method",
        "uri",
        "path",
        "query",
        "fragment",
        "version",
        "headers",
        "body",
        "chunked",
        "close",
        "must_close",
        "expect_continue",
        "proxy_protocol_info",
    )

    def __init__(self) -> None:
        self.url: list[bytes] = []
        self.url_size = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.error: BaseException | None = None
        self.method_bytes = b""
        self.version_text = ""
        self.method = ""
        self.uri = ""
        self.path = ""
        self.query = ""
        self.fragment = ""
        self.version = (1, 1)
        self.headers: list[tuple[str, str]] = []
        self.body: Any = None
        self.chunked = False
        self.close = False
        self.must_close = False
        self.expect_continue = False
        self.proxy_protocol_info = None

    def should_close(self) -> bool:
        return self.close or self.must_close

    def take(self, size: int) -> bytes:
        """Up to ``size`` of the body bytes received so far."""
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) > size:
            rest = data[size:]
            data = data[:size]
            self.chunks = [rest]
            self.buffered = len(rest)
        else:
            self.chunks = []
            self.buffered = 0
        return data


class Connection:
    """One client connection: the socket, its ``httptools`` parser (this object receives its
    callbacks) and the requests parsed so far, the first of them the one being served."""

    def __init__(self, sock: Any, url_limit: int, fields_limit: int, field_size_limit: int, head_limit: int) -> None:
        self.sock = sock
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[ParsedRequest] = deque()
        self.parsing: ParsedRequest | None = None
        self.dead = False  # the parser failed: nothing more is read from this connection
        self.eof = False
        self.head_bytes = 0
        self.url_limit = url_limit
        self.fields_limit = fields_limit
        self.field_size_limit = field_size_limit
        self.head_limit = head_limit

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        request = ParsedRequest()
        self.parsing = request
        self.queue.append(request)

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.url.append(url)
        request.url_size += len(url)
        if request.url_size > self.url_limit > 0:
            raise LimitRequestLine(request.url_size, self.url_limit)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        headers = request.raw_headers
        if len(headers) >= self.fields_limit:
            raise LimitRequestHeaders("limit request headers fields")
        # gunicorn measures the line "Name: value" with its CRLF
        if len(name) + len(value) + 4 > self.field_size_limit:
            raise LimitRequestHeaders("limit request headers fields size")
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.method_bytes = parser.get_method()
        request.version_text = parser.get_http_version()
        request.headers_done = True
        self.head_bytes = 0

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.chunks.append(body)
        request.buffered += len(body)

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.complete = True
        self.head_bytes = 0

    # --- reading ---------------------------------------------------------------------------

    def fill(self, idle: bool = False) -> bool:
        """One ``recv`` into the parser; False at the end of input (or when the parser failed).
        ``idle``: nothing is expected yet (a kept-alive connection after an answer): wait, then read."""
        if self.dead or self.eof:
            return False
        data = recv_expecting_wait(self.sock, RECV_SIZE) if idle else self.sock.recv(RECV_SIZE)
        if not data:
            self.eof = True
            return False
        self.head_bytes += len(data)
        self.feed(data)
        request = self.parsing
        if not self.dead and request is not None and not request.headers_done and self.head_bytes > self.head_limit:
            self.fail(LimitRequestHeaders("max buffer headers"))
        return True

    def feed(self, data: bytes) -> None:
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as upgrade:
                # An Upgrade (or CONNECT) request is complete; gunicorn never switches protocols
                # itself, so what follows is read as HTTP/1.1 again, by a new parser.
                offset = upgrade.args[0] if upgrade.args else len(data)
                self.parser = httptools.HttpRequestParser(self)
                data = data[offset:]
                if not data:
                    return
            except httptools.HttpParserCallbackError as error:
                self.fail(error.__context__ or error)
                return
            except httptools.HttpParserError as error:
                request = self.parsing
                if request is None or request.complete or request.url_size == 0:
                    self.fail(InvalidRequestLine(str(error)))
                else:
                    self.fail(InvalidHeader(str(error)))
                return

    def fail(self, error: BaseException) -> None:
        """The input cannot be parsed further: the request being parsed carries the error (a
        placeholder when it fell between requests), and the connection reads no more."""
        self.dead = True
        request = self.parsing
        if request is None or request.complete:
            request = ParsedRequest()
            self.queue.append(request)
            self.parsing = request
        request.error = error

    def more_body(self, request: ParsedRequest) -> bool:
        """Read more of ``request``'s body; False at the end of input. Raises the parse error
        that ended the body (a malformed chunk)."""
        if request.expect_continue:
            request.expect_continue = False
            send_all(self.sock, CONTINUE)
        if request.error is not None:
            raise request.error
        if self.fill():
            return True
        if request.error is not None:
            raise request.error
        return False


def release(request: ParsedRequest) -> None:
    """A request that is done: its body's ``Input`` refers back to it, a reference cycle that
    only the garbage collector would free. Broken here, the two go by reference counting at
    once. Left to the collector, requests that live through a few young collections (waiting
    for the group commit of their usage records) reached the oldest generation, which is
    collected on a timer (gatewaysite/gunicorn.conf.py): a worker's memory grew by about 100
    bytes per request until then."""
    request.body = None


class Input:
    """``wsgi.input``: the request body (chunks decoded) with ``read``, ``readline``, ``readlines``."""

    __slots__ = ("conn", "request")

    def __init__(self, conn: Connection, request: ParsedRequest) -> None:
        self.conn = conn
        self.request = request

    def _more(self) -> bool:
        request = self.request
        if request.complete:
            return False
        if self.conn.more_body(request):
            return True
        if request.chunked:
            raise NoMoreData(b"")  # gunicorn's ChunkedReader: a chunked body cut short
        return False  # a Content-Length body cut short reads short, as in gunicorn

    def read(self, size: int | None = None) -> bytes:
        if size is not None and not isinstance(size, int):
            raise TypeError("size must be an integral type")
        request = self.request
        if size is None or size < 0:
            while self._more():
                pass
            return request.take(request.buffered)
        if size == 0:
            return b""
        while request.buffered < size and self._more():
            pass
        return request.take(size)

    def holds(self, size: int) -> bool:
        """The next ``size`` bytes of the body are in memory: reading them will not wait."""
        return self.request.buffered >= size

    def readline(self, size: int | None = None) -> bytes:
        request = self.request
        limit = size if size is not None and size >= 0 else -1
        if limit == 0:
            return b""
        while True:
            chunks = request.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                request.chunks = [data]
                end = data.find(b"\n", 0, limit if limit >= 0 else len(data))
                if end >= 0:
                    return request.take(end + 1)
                if 0 <= limit <= len(data):
                    return request.take(limit)
            if not self._more():
                return request.take(limit if limit >= 0 else request.buffered)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


_response_names: dict[Any, int] = {}
_statuses: dict[str, int | None] = {}


def _response_name_kind(name: Any) -> int:
    """What gunicorn's ``process_headers`` does with a response header of this name (validated)."""
    kind = _response_names.get(name)
    if kind is not None:
        return kind
    if not isinstance(name, str):
        raise TypeError(f"{name!r} is not a string")
    if not TOKEN_RE.fullmatch(name):
        raise InvalidResponseHeaderName(f"{name!r}")
    lower = name.lower()
    if lower == "content-length":
        kind = R_LENGTH
    elif lower == "connection":
        kind = R_CONNECTION
    elif lower == "upgrade":
        kind = R_UPGRADE
    elif lower.strip() in util.hop_headers:
        kind = R_HOP
    else:
        kind = R_PLAIN
    if len(_response_names) < NAME_CACHE_MAX:
        _response_names[name] = kind
    return kind


class Response:
    """gunicorn's ``wsgi.Response`` for one request: ``start_response``, body writes with
    the framing gunicorn chooses, the status line and headers sent with the first body bytes.
    ``status``, ``sent`` and ``headers`` are what gunicorn's access log reads."""

    __slots__ = (
        "sock",
        "request",
        "status",
        "status_code",
        "headers",
        "response_length",
        "chunked",
        "omits_body",
        "headers_sent",
        "sent",
        "must_close",
        "upgrade",
        "warned",
    )

    def __init__(self, sock: Any, request: ParsedRequest, must_close: bool) -> None:
        self.sock = sock
        self.request = request
        self.status: str | None = None
        self.status_code: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.response_length: int | None = None
        self.chunked = False
        self.omits_body = False
        self.headers_sent = False
        self.sent = 0
        self.must_close = must_close
        self.upgrade = False
        self.warned = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info:
            try:
                if self.status and self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
            self.headers = []
            self.response_length = None
            self.upgrade = False
        elif self.status is not None:
            raise AssertionError("Response headers already set!")
        try:
            code = _statuses[status]
        except (KeyError, TypeError):
            if not isinstance(status, str):
                raise TypeError(f"{status!r} is not a string") from None
            if not STATUS_RE.fullmatch(status):
                raise ValueError(f"Invalid status {status!r}") from None
            try:
                code = int(status.split()[0])
            except ValueError:
                code = None
            if len(_statuses) < NAME_CACHE_MAX:
                _statuses[status] = code
        self.status = status
        self.status_code = code

        kept = self.headers
        value_ok = HEADER_VALUE_RE.fullmatch
        for name, value in headers:
            kind = _response_name_kind(name)
            if not isinstance(value, str):
                raise TypeError(f"{value!r} is not a string")
            if not value_ok(value):
                raise InvalidResponseHeader(f"{name!r}")  # the name only: the value may be a secret
            value = value.strip(" \t")
            if kind == R_PLAIN:
                kept.append((name, value))
            elif kind == R_LENGTH:
                self.response_length = int(value)
                kept.append((name, value))
            elif kind == R_CONNECTION:
                if value.lower() == "upgrade":
                    self.upgrade = True
            elif kind == R_UPGRADE and value.lower() == "websocket":
                kept.append((name, value))

        request = self.request
        omits = request.method == "HEAD" or code in (204, 304) or (code is not None and 100 <= code < 200)
        self.omits_body = omits
        if omits and (code == 204 or (code is not None and 100 <= code < 200)):
            self.headers = [(k, v) for k, v in kept if k.lower() != "content-length"]
            self.response_length = None
        self.chunked = self.response_length is None and request.version >= (1, 1) and not omits
        return self.write

    def should_close(self) -> bool:
        if self.must_close or self.request.should_close():
            return True
        if self.response_length is not None or self.chunked:
            return False
        if self.request.method == "HEAD":
            return False
        code = self.status_code
        return not (code is not None and (code < 200 or code in (204, 304)))

    def head(self) -> bytes:
        """The status line and headers, as gunicorn's ``send_headers`` writes them."""
        self.headers_sent = True
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.request.version
        lines = [
            f"HTTP/{version[0]}.{version[1]} {self.status}\r\nServer: {SERVER}\r\n"
            f"Date: {http_date()}\r\nConnection: {connection}\r\n"
        ]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"{data!r} is not a byte")
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if self.omits_body:
            if not self.headers_sent:
                send_all(self.sock, self.head())
            if data and not self.warned:
                self.warned = True
                _log_dropped_body(self)
            return
        size = len(data)
        if self.response_length is not None:
            left = self.response_length - self.sent
            if size > left:
                size = max(left, 0)
                data = data[:size]
        if not size:
            if not self.headers_sent:
                send_all(self.sock, self.head())
            return
        self.sent += size
        if self.chunked:
            data = chunk(data)
        send_all(self.sock, data if self.headers_sent else self.head() + data)

    def close(self) -> None:
        if not self.headers_sent:
            head = self.head()
            send_all(self.sock, head + LAST_CHUNK if self.chunked else head)
        elif self.chunked:
            send_all(self.sock, LAST_CHUNK)


def _log_dropped_body(response: Response) -> None:
    import logging

    logging.getLogger("gunicorn.http.wsgi").warning(
        "WSGI app sent body bytes on a no-body response (method=%s status=%s); dropping per RFC 9110.",
        response.request.method,
        response.status_code,
    )


class GatewayWorker(GeventWorker):
    """gunicorn's gevent worker whose connections are served by :meth:`serve` (module docstring)."""

    alive: bool  # gunicorn's: False once the worker is to stop (a signal, max_requests)
    nr: int  # gunicorn's: requests served
    max_requests: int

    own_connections = True

    def run(self) -> None:
        self.setup_connections()
        super().run()

    def setup_connections(self) -> None:
        """Settings read per request, taken once (post_worker_init may have replaced ``cfg``)."""
        cfg = self.cfg
        self.own_connections = not (
            cfg.is_ssl
            or cfg.proxy_protocol not in (None, False, "off")
            or cfg.http2_cleartext not in (None, False, "off")
            or "h2" in (cfg.http_protocols or ())
            or getattr(cfg, "protocol", "http") != "http"
            or cfg.permit_unconventional_http_method
            or cfg.permit_unconventional_http_version
            or cfg.casefold_http_method
            or cfg.permit_obsolete_folding
            or cfg.strip_header_spaces
            or cfg.header_map not in ("drop", "dangerous", "refuse")
        )
        line = cfg.limit_request_line
        if line < 0 or line >= MAX_REQUEST_LINE:
            line = MAX_REQUEST_LINE
        self.limit_request_line = line  # 0: no limit
        fields = cfg.limit_request_fields
        if fields <= 0 or fields > MAX_HEADERS:
            fields = MAX_HEADERS
        field_size = cfg.limit_request_field_size
        if field_size <= 0:
            field_size = DEFAULT_MAX_HEADERFIELD_SIZE
        self.limit_request_fields = fields
        self.limit_request_field_size = field_size
        # gunicorn's max_buffer_headers, plus the request line
        self.head_limit = fields * (field_size + 2) + 4 + (line or 1024 * 1024)
        self.keepalive = cfg.keepalive
        self.header_map = cfg.header_map
        self.secure_scheme_headers = dict(cfg.secure_scheme_headers or {})
        self.forwarder_headers = list(cfg.forwarder_headers or [])
        self.access_log = bool(self.log.access_log_enabled)
        self.pre_request = cfg.pre_request if cfg.pre_request is not PreRequest.pre_request else None
        self.post_request = cfg.post_request if cfg.post_request is not PostRequest.post_request else None
        self.script_name = os.environ.get("SCRIPT_NAME", "")
        self.environ_base: dict[str, Any] = {
            "wsgi.errors": WSGIErrorsWrapper(cfg),
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "wsgi.url_scheme": "http",
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self.script_name,
        }
        self.request_names: dict[bytes, tuple[str, str, int]] = {}
        self.peers: dict[str, bool] = {}

    open_connections = 0  # connections being served now (the young-collection clock reads it)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.open_connections += 1
        try:
            self._handle(listener, client, addr)
        finally:
            self.open_connections -= 1

    def _handle(self, listener: Any, client: Any, addr: Any) -> None:
        if not self.own_connections:
            super().handle(listener, client, addr)
            return
        try:
            self.serve(listener, client, addr)
        except OSError as error:
            if error.errno not in CLIENT_GONE and not isinstance(error, TimeoutError):
                self.log.exception("Socket error processing request.")
        except (gevent.GreenletExit, SystemExit):
            pass  # stopped at the end of the graceful timeout
        except Exception as error:  # noqa: BLE001 - gunicorn's handler answers any error the same way
            self.handle_error(None, client, addr, error)
        finally:
            util.close(client)

    def trusted(self, addr: Any) -> bool:
        """Whether the peer may set the forwarded scheme and ``_`` headers (``forwarded_allow_ips``)."""
        if not isinstance(addr, tuple):
            return True
        verdict = self.peers.get(addr[0])
        if verdict is None:
            cfg = self.cfg
            verdict = ip_in_allow_list(addr[0], cfg.forwarded_allow_ips, cfg.forwarded_allow_networks())
            if len(self.peers) >= 4096:
                self.peers.clear()
            self.peers[addr[0]] = verdict
        return verdict

    def serve(self, listener: Any, client: Any, addr: Any) -> None:
        """The keep-alive loop of one connection."""
        client.setblocking(1)
        conn = Connection(
            client, self.limit_request_line, self.limit_request_fields, self.limit_request_field_size, self.head_limit
        )
        base = self.environ_base.copy()
        base["gunicorn.socket"] = client
        if isinstance(addr, tuple):
            base["REMOTE_ADDR"] = addr[0]
            base["REMOTE_PORT"] = str(addr[1])
        else:
            base["REMOTE_ADDR"] = addr.decode() if isinstance(addr, bytes) else addr
        server = listener.getsockname()
        unix_listener = isinstance(server, (str, bytes))
        if not unix_listener:
            base["SERVER_NAME"] = server[0]
            base["SERVER_PORT"] = str(server[1])
        trusted = self.trusted(addr)
        keepalive = self.keepalive
        queue = conn.queue
        answered = False  # an answer was sent: the next request's first read waits before reading
        while True:
            if keepalive:
                client.settimeout(keepalive)
            try:
                while not queue or not queue[0].headers_done:
                    if queue and queue[0].error is not None:
                        self.handle_error(None, client, addr, queue[0].error)
                        return
                    idle = answered and not queue
                    answered = False
                    if not conn.fill(idle):
                        if queue and queue[0].error is not None:
                            continue
                        return  # the client closed (or half-closed) the connection
            except TimeoutError:
                return  # idle past the keep-alive timeout
            if keepalive:
                client.settimeout(None)
            request = queue[0]
            environ = self.prepare(conn, request, base, trusted)
            if unix_listener:
                self.unix_server(environ, request)
            if not self.respond(conn, request, environ, client, addr):
                return
            if not request.complete:
                if keepalive:
                    client.settimeout(keepalive)
                if not self.drain(conn, request):
                    return
            release(queue.popleft())
            answered = True

    def prepare(self, conn: Connection, request: ParsedRequest, base: dict[str, Any], trusted: bool) -> dict[str, Any]:
        """Check the request as gunicorn's parser does and build its environ (``wsgi.create``)."""
        version = request.version_text
        if version == "1.1":
            request.version = (1, 1)
        elif version == "1.0":
            request.version = (1, 0)
            request.close = True
        else:
            major, _, minor = version.partition(".")
            if major != "1" or not minor.isdigit():
                raise InvalidHTTPVersion(version)
            request.version = (1, int(minor))
        method = request.method_bytes.decode("latin-1")
        request.method = method
        url = request.url
        uri = (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1")
        request.uri = uri
        line = len(method) + len(uri) + 10  # "METHOD URI HTTP/1.1"
        if line > self.limit_request_line > 0:
            raise LimitRequestLine(line, self.limit_request_line)
        if uri[:1] == "/" and uri[1:2] != "/":
            target = uri.partition("#")[0] if "#" in uri else uri
            path, _, query = target.partition("?")
        else:
            path, query = _split_target(method, uri)
        request.path = path
        request.query = query
        if method == "CONNECT":
            request.close = True

        environ = base.copy()
        environ["REQUEST_METHOD"] = method
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = uri
        environ["SERVER_PROTOCOL"] = "HTTP/" + version
        body = Input(conn, request)
        request.body = body
        environ["wsgi.input"] = body

        names = self.request_names
        keep_list = self.access_log or self.pre_request is not None or self.post_request is not None
        kept = request.headers
        script_name = None
        connection_seen = False
        scheme_seen = False
        singletons: set[str] | None = None
        chunked = transfer_encoding = False
        content_length = None
        for raw_name, raw_value in request.raw_headers:
            known = names.get(raw_name)
            if known is None:
                known = self.request_name(raw_name)
            name, key, kind = known
            value = raw_value.decode("latin-1").rstrip(" \t")
            if kind:
                if kind == UNDERSCORE:
                    forwarded = trusted and (name in self.forwarder_headers or "*" in self.forwarder_headers)
                    if not forwarded and self.header_map != "dangerous":
                        if self.header_map == "drop":
                            continue
                        raise InvalidHeaderName(name)
                    if name == "SCRIPT_NAME":
                        script_name = value
                elif kind in (HOST, CONTENT_TYPE):
                    if singletons is None:
                        singletons = set()
                    if name in singletons:
                        raise InvalidHeader(name, req=request)
                    singletons.add(name)
                    if kind == CONTENT_TYPE:
                        environ["CONTENT_TYPE"] = value
                        if keep_list:
                            kept.append((name, value))
                        continue
                elif kind == CONTENT_LENGTH:
                    if content_length is not None:
                        raise InvalidHeader("CONTENT-LENGTH", req=request)
                    content_length = value
                    environ["CONTENT_LENGTH"] = value
                    if keep_list:
                        kept.append((name, value))
                    continue
                elif kind == TRANSFER_ENCODING:
                    transfer_encoding = True
                    chunked = _transfer_encoding(request, value, chunked)
                elif kind == CONNECTION:
                    if not connection_seen:
                        connection_seen = True
                        token = value.lower().strip(" \t")
                        if token == "close":
                            request.close = True
                        elif token == "keep-alive":
                            request.close = method == "CONNECT"
                elif kind == EXPECT:
                    if value.lower() != "100-continue":
                        raise ExpectationFailed(value)
                    if request.version >= (1, 1) and not request.complete:
                        request.expect_continue = True
                if trusted and name in self.secure_scheme_headers:
                    scheme = "https" if value == self.secure_scheme_headers[name] else "http"
                    if scheme_seen and scheme != environ["wsgi.url_scheme"]:
                        raise InvalidSchemeHeaders()
                    scheme_seen = True
                    environ["wsgi.url_scheme"] = scheme
            if keep_list:
                kept.append((name, value))
            previous = environ.setdefault(key, value)
            if previous is not value:
                environ[key] = previous + "," + value
        request.chunked = chunked
        if transfer_encoding and not chunked:
            # RFC 9112 6.3: no length can be determined for such a request
            raise InvalidHeader("TRANSFER-ENCODING", req=request)
        if chunked and content_length is not None:
            raise InvalidHeader("CONTENT-LENGTH", req=request)

        script = self.script_name if script_name is None else script_name
        if script:
            if not path.startswith(script):
                raise ConfigurationProblem(f"Request path {path!r} does not start with SCRIPT_NAME {script!r}")
            path = path[len(script) :]
            environ["SCRIPT_NAME"] = script
        environ["PATH_INFO"] = util.unquote_to_wsgi_str(path) if "%" in path else path
        return environ

    def request_name(self, raw: bytes) -> tuple[str, str, int]:
        """(upper-case name, environ key, kind) of a request header name, remembered."""
        name = raw.decode("latin-1").upper()
        kind = _REQUEST_KINDS.get(name, PLAIN)
        if kind == PLAIN and "_" in name:
            kind = UNDERSCORE
        if kind == PLAIN and name in self.secure_scheme_headers:
            kind = -1  # checked for the scheme only
        known = (name, "HTTP_" + name.replace("-", "_"), kind)
        if len(self.request_names) < NAME_CACHE_MAX:
            self.request_names[raw] = known
        return known

    def unix_server(self, environ: dict[str, Any], request: ParsedRequest) -> None:
        """SERVER_NAME and SERVER_PORT on a Unix socket, from the Host header (as wsgi.create)."""
        host = environ.get("HTTP_HOST")
        if host:
            server = host.split(":")
            if len(server) == 1:
                scheme = environ["wsgi.url_scheme"]
                server.append("80" if scheme == "http" else "443" if scheme == "https" else "")
        else:
            server = ["", ""]
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])

    def respond(self, conn: Connection, request: ParsedRequest, environ: dict[str, Any], sock: Any, addr: Any) -> bool:
        """Run the application for ``request``; True when the connection may serve another."""
        started = time.monotonic() if self.access_log else 0.0
        if self.pre_request is not None:
            self.pre_request(self, request)
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        response = Response(sock, request, not self.alive or not self.keepalive)
        try:
            result = self.wsgi(environ, response.start_response)
            try:
                for item in result:
                    response.write(item)
                response.close()
            finally:
                if self.access_log:
                    self.log.access(response, request, environ, timedelta(seconds=time.monotonic() - started))
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except OSError:
            raise  # the client is gone, or a socket error: handle() decides
        except (gevent.GreenletExit, SystemExit):
            raise
        except Exception as error:
            if not response.headers_sent:
                self.handle_error(request, sock, addr, error)
                return False
            # the answer has begun: another one on the same connection would corrupt it
            self.log.exception("Error handling request")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return False
        finally:
            if self.post_request is not None:
                try:
                    self.post_request(self, request, environ, response)
                except Exception:
                    self.log.exception("Exception in post_request hook")
        return not response.should_close()

    def drain(self, conn: Connection, request: ParsedRequest) -> bool:
        """Read and drop the rest of a body the application left; False when the connection must
        close instead (a malformed or endless body, the client waiting for ``100 Continue``)."""
        if request.expect_continue or request.error is not None:
            return False
        drained = 0
        while not request.complete:
            drained += request.buffered
            request.chunks = []
            request.buffered = 0
            if drained > DRAIN_MAX_BYTES or request.error is not None:
                return False
            try:
                if not conn.fill():
                    return False
            except TimeoutError:
                return False
        return request.error is None


def _split_target(method: str, uri: str) -> tuple[str, str]:
    """Path and query of a request target other than a plain origin-form path (gunicorn's checks)."""
    if uri == "*":
        if method != "OPTIONS":
            raise InvalidRequestLine(uri)
    elif method != "CONNECT" and not uri.startswith("/") and "://" not in uri:
        raise InvalidRequestLine(uri)
    try:
        parts = util.split_request_uri(uri)
    except ValueError:
        raise InvalidRequestLine(uri) from None
    return parts.path or "", parts.query or ""


def _transfer_encoding(request: ParsedRequest, value: str, chunked: bool) -> bool:
    """gunicorn's Transfer-Encoding rules (``Message.set_body_reader``); whether the body is chunked."""
    for token in value.split(","):
        coding = token.strip(" \t").lower()
        if coding == "chunked":
            if chunked:
                raise InvalidHeader("TRANSFER-ENCODING", req=request)
            chunked = True
        elif coding == "identity":
            if chunked:
                raise InvalidHeader("TRANSFER-ENCODING", req=request)
        elif coding in ("compress", "deflate", "gzip"):
            if chunked:
                raise InvalidHeader("TRANSFER-ENCODING", req=request)
            request.must_close = True
        else:
            raise UnsupportedTransferCoding(value)
    if chunked and request.version < (1, 1):
        raise InvalidHeader("TRANSFER-ENCODING", req=request)
    return chunked
