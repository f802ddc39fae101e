"""The upstream HTTP client (providers/http.py over providers/http1.py) against real loopback servers.

Each server here is a raw socket speaking HTTP/1.1 by hand, so that a test can frame a
response any way (Content-Length, chunked, close-delimited), keep or drop a connection,
stall, drip, or serve TLS with a certificate from a CA the test makes.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers import http1
from providers.adapters.base import Target, UpstreamError
from providers.http import CancelScope, cancel_scope, iter_sse, post_json, read_json

Handler = Callable[["Exchange"], None]


class Exchange:
    """One connection on the server side: read requests, write raw bytes."""

    def __init__(self, sock: socket.socket, server: LoopbackServer) -> None:
        self.sock = sock
        self.server = server
        self.buf = b""

    def request(self) -> bytes | None:
        """The next request (head and body), or None when the client closed the connection."""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = self.sock.recv(65536)
            if not data:
                return None
            rest += data
        self.buf = rest[length:]
        request = head + b"\r\n\r\n" + rest[:length]
        with self.server.lock:
            self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hung_up(self, timeout: float = 5.0) -> bool:
        """Whether the client closed its side within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (TimeoutError, OSError) as exc:
            return not isinstance(exc, TimeoutError)


class LoopbackServer:
    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.lock = threading.Lock()
        self.requests: list[bytes] = []
        self.connections = 0
        self.hang_ups: list[bool] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/v1/chat/completions", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            self.handler(Exchange(sock, self))
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(handler: Handler, **kwargs: Any) -> LoopbackServer:
        server = LoopbackServer(handler, **kwargs)
        servers.append(server)
        return server

    yield start
    http1.close_all()
    for server in servers:
        server.close()


def target(**overrides: Any) -> Target:
    values: dict[str, Any] = {
        "provider": "upstream",
        "kind": "openai",
        "base_url": "",
        "model": "m",
        "api_key": "k",
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "response_timeout": 5.0,
        "first_chunk_timeout": 5.0,
        "stream_idle_timeout": 5.0,
    }
    values.update(overrides)
    return Target(**values)


def call(server: LoopbackServer, **overrides: Any) -> Any:
    t = target(**overrides)
    return read_json(t, post_json(t, server.url(), {"n": 1}, {"authorization": "Bearer k"}))


def ok(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def content_length(body: bytes) -> bytes:
    return ok(body, b"content-type: application/json", b"content-length: %d" % len(body))


def chunked(*pieces: bytes) -> bytes:
    chunks = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in pieces)
    return ok(chunks + b"0\r\nx-trailer: yes\r\n\r\n", b"transfer-encoding: chunked")


def keep_answering(reply: bytes) -> Handler:
    def handler(ex: Exchange) -> None:
        while ex.request() is not None:
            ex.send(reply)

    return handler


def test_content_length_answers_are_read_and_the_connection_is_reused(serve: Any) -> None:
    server = serve(keep_answering(content_length(b'{"answer": 42}')))
    assert [call(server) for _ in range(3)] == [{"answer": 42}] * 3
    assert server.connections == 1  # keep-alive: one connection for the three requests
    assert http1.idle_connections(server.url()) == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"content-type: application/json" in lines and b"authorization: Bearer k" in lines
    assert b"content-length: %d" % len(body) in lines and body == b'{"n":1}'


def test_a_request_larger_than_the_socket_buffer_is_sent_whole(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        while (request := ex.request()) is not None:
            body = request.partition(b"\r\n\r\n")[2]
            ex.send(content_length(b'{"received": %d}' % len(body)))

    server = serve(handler)
    t = target()
    text = "x" * 4_000_000  # one send cannot take it all: the rest follows
    answer = read_json(t, post_json(t, server.url(), {"text": text}, {}))
    assert answer == {"received": len(text) + len('{"text":""}')}


def test_chunked_answers_are_decoded_even_when_split_across_reads(serve: Any) -> None:
    reply = chunked(b'{"text": ', b'"hel', b'lo"}')

    def handler(ex: Exchange) -> None:
        while ex.request() is not None:
            for i in range(0, len(reply), 7):  # small writes: sizes, data and CRLFs cut anywhere
                ex.send(reply[i : i + 7])
                time.sleep(0.001)

    server = serve(handler)
    assert call(server) == {"text": "hello"}
    assert call(server) == {"text": "hello"}
    assert server.connections == 1


def test_a_close_delimited_answer_is_read_to_the_end_and_the_connection_is_not_pooled(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(ok(b'{"closed": true}', b"connection: close"))

    server = serve(handler)
    assert call(server) == {"closed": True}
    assert http1.idle_connections(server.url()) == 0
    assert call(server) == {"closed": True}
    assert server.connections == 2


def test_connection_close_from_the_server_is_honoured(serve: Any) -> None:
    server = serve(keep_answering(ok(b"{}", b"Connection: close", b"content-length: 2")))
    call(server)
    assert http1.idle_connections(server.url()) == 0


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(content_length(b'{"n": 1}'))  # keep-alive, then hangs up while the connection is idle

    server = serve(handler)
    assert call(server) == {"n": 1}
    time.sleep(0.1)  # the server's FIN arrives at the pooled connection
    assert call(server) == {"n": 1}
    assert server.connections == 2 and len(server.requests) == 2


def test_a_pooled_connection_that_fails_on_send_is_retried_once_on_a_new_one(serve: Any) -> None:
    release = threading.Event()

    def handler(ex: Exchange) -> None:
        while ex.request() is not None:
            ex.send(content_length(b'{"n": 1}'))
        release.wait(5)  # the client's side shut down: stay open, so the pooled socket looks idle and fine

    server = serve(handler)
    assert call(server) == {"n": 1}
    (pooled,) = http1.route(server.url()).origin.idle
    assert pooled.sock is not None
    pooled.sock.shutdown(socket.SHUT_WR)  # sending on it now fails (EPIPE), as on one the server reset
    time.sleep(0.05)
    assert call(server) == {"n": 1}
    release.set()
    assert server.connections == 2 and len(server.requests) == 2  # nothing was received twice


def test_an_upstream_that_stalls_is_cut_by_the_read_timeout(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        server.hang_ups.append(ex.hung_up())

    server = serve(handler)
    with pytest.raises(UpstreamError) as raised:  # the server holds the connection for 5 s: only the timeout cuts it
        call(server, read_timeout=0.3)
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        504,
        "upstream_timeout",
        "upstream: timed out",
    )
    time.sleep(0.2)
    assert server.hang_ups == [True]  # the connection was closed, not pooled
    assert http1.idle_connections(server.url()) == 0


def test_a_dripping_upstream_is_cut_by_the_response_deadline(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(100):  # one byte every 50 ms: each read is quick, the whole answer is not
            time.sleep(0.05)
            ex.send(b" ")

    server = serve(handler)
    with pytest.raises(UpstreamError) as raised:
        call(server, read_timeout=1.0, response_timeout=0.5)
    assert raised.value.status == 504 and raised.value.code == "upstream_timeout"
    assert raised.value.message == "upstream: did not finish its answer within 0.5 s"


def test_dripped_headers_are_cut_by_the_deadline_too(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        for byte in b"HTTP/1.1 200 OK\r\nx-padding: " + b"p" * 100:
            time.sleep(0.05)
            ex.send(bytes([byte]))

    server = serve(handler)
    with pytest.raises(UpstreamError) as raised:
        call(server, read_timeout=1.0, response_timeout=0.5)
    assert raised.value.message == "upstream: did not finish its answer within 0.5 s"


def test_server_sent_events_over_chunks_and_a_stream_stalling_between_events(serve: Any) -> None:
    events = [b'data: {"i": 0}\n\n', b'event: delta\ndata: {"i": 1}\n\n']

    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            ex.send(b"%x\r\n%b\r\n" % (len(event), event))
        time.sleep(2)  # stalls after two events

    server = serve(handler)
    t = target(stream_idle_timeout=0.3)
    received = []
    with pytest.raises(UpstreamError) as raised:
        for event in iter_sse(t, post_json(t, server.url(), {}, {}, stream=True)):
            received.append(event)
    assert received == [(None, b'{"i": 0}'), ("delta", b'{"i": 1}')]
    assert raised.value.status == 504 and "let the stream stall" in raised.value.message


def test_a_stream_cut_mid_chunk_is_truncated(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        ex.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n20\r\ndata: {")

    server = serve(handler)
    t = target()
    with pytest.raises(UpstreamError) as raised:
        list(iter_sse(t, post_json(t, server.url(), {}, {}, stream=True)))
    assert (raised.value.status, raised.value.code) == (502, "upstream_truncated")


def test_errors_keep_their_status_message_and_retry_after(serve: Any) -> None:
    body = b'{"error": {"message": "slow down"}}'
    reply = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    server = serve(keep_answering(reply))
    with pytest.raises(UpstreamError) as raised:
        call(server)
    assert raised.value.upstream_status == 429 and raised.value.retry_after == 3.0
    assert "slow down" in raised.value.message
    assert http1.idle_connections(server.url()) == 1  # the error body was read: the connection is reusable


def test_interim_responses_are_skipped(serve: Any) -> None:
    server = serve(keep_answering(b"HTTP/1.1 100 Continue\r\n\r\n" + content_length(b'{"n": 2}')))
    assert call(server) == {"n": 2}


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t = target()
    with pytest.raises(UpstreamError) as raised:
        post_json(t, f"http://127.0.0.1:{port}/v1/x", {}, {})
    assert (raised.value.status, raised.value.code) == (502, "upstream_unreachable")


def test_a_cancelled_attempt_is_cut_at_once_and_its_connection_never_pooled(serve: Any) -> None:
    def handler(ex: Exchange) -> None:
        ex.request()
        server.hang_ups.append(ex.hung_up(timeout=10))

    server = serve(handler)
    scope = CancelScope()
    threading.Timer(0.3, scope.cancel).start()
    with cancel_scope(scope), pytest.raises(UpstreamError) as raised:
        call(server, read_timeout=10)
    # the read ended on the shut-down socket (a timeout would be a 504)
    assert raised.value.status == 502 and raised.value.message == "upstream: connection failed (ProtocolError)"
    time.sleep(0.2)
    assert server.hang_ups == [True]
    assert http1.idle_connections(server.url()) == 0
    with cancel_scope(scope), pytest.raises(UpstreamError):  # a cancelled scope sends nothing more
        call(server)
    assert len(server.requests) == 1


def test_a_connection_released_after_its_scope_was_cancelled_is_closed(serve: Any) -> None:
    server = serve(keep_answering(content_length(b'{"n": 3}')))
    scope = CancelScope()
    t = target()
    with cancel_scope(scope):
        response = post_json(t, server.url(), {}, {})
    scope.cancel()
    with contextlib.suppress(UpstreamError):  # the body may have come with the headers, before the cut
        read_json(t, response)
    assert http1.idle_connections(server.url()) == 0
    assert call(server) == {"n": 3}  # the next call opens a new connection
    assert server.connections == 2


# --- TLS -------------------------------------------------------------------------------------


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def tls_server(serve: Any, tmp_path: Path) -> tuple[LoopbackServer, Path]:
    ca, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[str | None] = []

    def remember_sni(sock: Any, name: str | None, _context: Any) -> None:
        seen.append(name)

    context.sni_callback = remember_sni
    server = serve(keep_answering(content_length(b'{"tls": true}')), tls=context)
    server.sni = seen  # type: ignore[attr-defined]
    return server, ca


def test_tls_is_verified_against_the_ca_store_named_by_ssl_cert_file(
    tls_server: tuple[LoopbackServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    t = target()
    url = server.url(host="localhost")
    assert read_json(t, post_json(t, url, {}, {})) == {"tls": True}
    assert read_json(t, post_json(t, url, {}, {})) == {"tls": True}
    assert server.connections == 1  # TLS connections are pooled too
    assert server.sni == ["localhost"]  # type: ignore[attr-defined]


def test_tls_to_a_server_whose_certificate_is_not_trusted_fails(tls_server: tuple[LoopbackServer, Path]) -> None:
    server, _ = tls_server
    t = target()
    with pytest.raises(UpstreamError) as raised:
        post_json(t, server.url(), {}, {})
    assert raised.value.status == 502 and raised.value.message == "upstream: connection failed (SSLError)"
