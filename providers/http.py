"""The pooled HTTP client every adapter uses, and server-sent-event parsing.

urllib3 directly, not requests: the same connection pool for ~1.5 ms less per call
(see docs/architecture.md). Under gunicorn's gevent worker urllib3 is cooperative.

Two costs of the general-purpose path are cut (measured in docs/benchmark.md):
- checking a pooled connection for a hang-up before reuse is one ``poll(0)`` system
  call on the real ``select.poll``; gevent's cooperative ``poll`` sets up watchers and a
  timeout for what cannot block (about a tenth of a request's CPU otherwise);
- each URL's connection pool and request path are looked up once, not parsed and
  normalized by the ``PoolManager`` on every call.
"""

from __future__ import annotations

import select
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

from providers.adapters.base import Target, UpstreamError, error_for_status

_poll_factory: Callable[[], Any] | None = None


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


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# maxsize: connections kept per upstream; thousands of concurrent streams each hold one.
_pool = urllib3.PoolManager(num_pools=64, maxsize=4096, block=False, retries=False)
_pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}  # type: ignore[assignment]
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


def _timeout(target: Target) -> urllib3.Timeout:
    return urllib3.Timeout(connect=target.connect_timeout, read=target.read_timeout)


def _transport_error(target: Target, exc: Exception) -> UpstreamError:
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # type: ignore[assignment]
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
    """POST JSON; returns the response for 2xx, raises ``UpstreamError`` otherwise."""
    try:
        connection_pool, path = _route(url)
        response = connection_pool.urlopen(
            "POST",
            path,
            body=orjson.dumps(payload),
            headers={"content-type": "application/json", **headers},
            timeout=_timeout(target),
            preload_content=not stream,
            redirect=False,
            retries=False,
            assert_same_host=False,
        )
    except (HTTPError, OSError) as exc:
        raise _transport_error(target, exc) from None
    if response.status >= 300:
        try:
            body = response.data if not stream else response.read()
        except (HTTPError, OSError):
            body = b""
        finally:
            if stream:
                response.release_conn()
        # The message may quote the request back; ProviderAdapter redacts every error on its way out.
        raise error_for_status(target.provider, response.status, error_message(body))
    return response


def read_json(target: Target, response: urllib3.BaseHTTPResponse) -> Any:
    try:
        return orjson.loads(response.data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{target.provider}: answered with invalid JSON", status=502) from None


def iter_sse(target: Target, response: urllib3.BaseHTTPResponse) -> Iterator[tuple[str | None, bytes]]:
    """Yield ``(event, data)`` for each server-sent event of a streaming response."""
    buffer = b""
    event: str | None = None
    data_lines: list[bytes] = []
    finished = False
    try:
        while True:
            chunk = response.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
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
                    event, data_lines = None, []
                elif line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                # comments (":") and other fields are ignored
        if data_lines:
            yield event, b"\n".join(data_lines)
        finished = True
    except (HTTPError, OSError, ProtocolError) as exc:
        raise _transport_error(target, exc) from None
    finally:
        if not finished:  # stopped early: the connection holds unread data, so it cannot be reused
            response.close()
        response.release_conn()
