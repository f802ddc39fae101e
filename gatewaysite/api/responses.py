"""The API's responses: Django's, with headers that cost less to set and read.

A completion's answer carries about fifteen headers: the gateway's own (attempts, strategy,
provider, cost, spend, latency, the request id), DRF's ``Allow``, and the security
middleware's. Django's ``ResponseHeaders`` checks each name and value in two Python calls
(an encode to test the charset, then a newline check), answers ``in`` and ``setdefault``
by raising and catching ``KeyError`` for a missing header, and lists its items by looking
every name up again. ``ApiHeaders`` holds the same contents and raises the same errors,
for less: a plain ASCII ``str`` name and value without CR or LF (every header the gateway
and Django's middleware set) is stored as Django stores it after one pass of checks;
anything else (bytes, non-ASCII text, newlines, other types) takes Django's own path, with
its conversions and its errors. Measured in docs/benchmark.md; tests/test_api_responses.py
holds it to Django's class.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpResponse, SimpleCookie, StreamingHttpResponse
from django.http.response import ResponseHeaders


class _HeaderItems(ItemsView[str, str]):
    """``(name, value)`` pairs straight from the store, in order, without a lookup per name."""

    _mapping: ApiHeaders

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._mapping._store.values())


_ONLY_STR = {str}


class ApiHeaders(ResponseHeaders):
    """``ResponseHeaders``: the same contents, answers and errors; its common operations cheaper."""

    _store: dict[str, tuple[str, str]]

    def __init__(self, data: Any) -> None:
        # ResponseHeaders.__init__ (each item through __setitem__), without its generator for a dict
        if type(data) is not dict:
            super().__init__(data)
            return
        # The common case, every name and value a plain str (a subclass goes Django's way),
        # checked as __setitem__ checks one header but in one pass over all of them joined (a
        # completion's answer has about ten); a dict holding anything else goes header by header.
        if {*map(type, data), *map(type, data.values())} == _ONLY_STR:
            joined = "".join([*data, *data.values()])
            if joined.isascii() and "\n" not in joined and "\r" not in joined:
                self._store = {key.lower(): (key, value) for key, value in data.items()}
                return
        self._store = {}
        setitem = self.__setitem__
        for key, value in data.items():
            setitem(key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        # both a str that Django would store unchanged: ASCII (so latin-1 too), no CR or LF
        # (checked inline: this runs about fifteen times per answer)
        if type(key) is str and type(value) is str:
            both = key + value
            if both.isascii() and "\n" not in both and "\r" not in both:
                self._store[key.lower()] = (key, value)
                return
        super().__setitem__(key, value)

    def setdefault(self, key: str, value: Any) -> None:
        # ResponseHeaders.setdefault: the security middleware's three per answer
        if key.lower() not in self._store:
            self[key] = value

    def __contains__(self, key: object) -> bool:
        return key.lower() in self._store  # type: ignore[attr-defined]

    def get(self, key: str, default: Any = None) -> Any:
        item = self._store.get(key.lower())
        return default if item is None else item[1]

    def items(self) -> _HeaderItems:  # still an ItemsView
        return _HeaderItems(self)


def _api_headers(headers: Mapping[str, str]) -> ApiHeaders:
    """``headers`` as ``ApiHeaders``, with Django's default ``Content-Type`` when they have
    none, as ``HttpResponseBase.__init__`` gives it (no charset of the response's own here)."""
    api_headers = ApiHeaders(headers)
    if "Content-Type" not in api_headers:
        api_headers["Content-Type"] = f"text/html; charset={settings.DEFAULT_CHARSET}"
    return api_headers


class ApiResponse(HttpResponse):
    """``HttpResponse(body, status=status, headers=headers)`` built with ``ApiHeaders`` from the start.

    ``HttpResponseBase.__init__`` first builds a ``ResponseHeaders``, asks it for a
    ``Content-Type`` (a ``KeyError`` raised and caught) and, when there is none, for the
    charset (another), and the store was then built a second time. This sets the same
    attributes to the same values once (tests/test_api_responses.py compares every
    attribute with the response Django builds, so a Django upgrade that adds one fails there).
    """

    def __init__(self, content: bytes | None, *, status: int, headers: Mapping[str, str]) -> None:
        self.headers = _api_headers(headers)
        self._charset = None
        self._resource_closers: list[Any] = []
        self._handler_class = None
        self.cookies = SimpleCookie()
        self.closed = False
        try:  # HttpResponseBase's checks
            code = int(status)
        except (ValueError, TypeError):
            raise TypeError("HTTP status code must be an integer.") from None
        if not 100 <= code <= 599:
            raise ValueError("HTTP status code must be an integer from 100 to 599.")
        self.status_code = code
        self._reason_phrase = None
        self.content = content


def api_response(body: bytes | None, *, status: int, headers: Mapping[str, str]) -> HttpResponse:
    """``HttpResponse(body, status=status, headers=headers)`` with ``ApiHeaders``."""
    return ApiResponse(body, status=status, headers=headers)


def api_stream(chunks: Iterable[bytes], *, status: int, headers: Mapping[str, str]) -> StreamingHttpResponse:
    """``StreamingHttpResponse(chunks, status=status, headers=headers)`` with ``ApiHeaders``."""
    response = StreamingHttpResponse(chunks, status=status)
    response.headers = _api_headers(headers)
    return response
