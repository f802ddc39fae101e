"""``ApiHeaders`` (gatewaysite/api/responses.py) answers as Django's ``ResponseHeaders``:
the same stored names and values, lookups, items and errors, for any name and value."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import BadHeaderError, ResponseHeaders
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gatewaysite.api.responses import ApiHeaders, api_response, api_stream


def outcome(headers: Any, name: Any, value: Any) -> tuple[str, Any]:
    """What setting ``name`` to ``value`` does: the store after it, or the error's type."""
    try:
        headers[name] = value
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return "error", type(exc)
    return "stored", dict(headers._store)


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
NAMES = st.one_of(
    TEXT, st.sampled_from(["Content-Type", "x-gateway-cost-usd", "Allow", "X\nInjected", "X\rInjected", "é-name"])
)
VALUES = st.one_of(
    TEXT,
    st.binary(max_size=12),
    st.integers(),
    st.none(),
    st.sampled_from(
        ["application/json", "0.000012300", "café", "price €1", "a\r\nSet-Cookie: x=1", "a\rb", "tab\tvalue"]
    ),
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(first=st.lists(st.tuples(NAMES, VALUES), max_size=6), name=NAMES, value=VALUES)
def test_setting_any_header_stores_or_fails_as_django(first: list[tuple[Any, Any]], name: Any, value: Any) -> None:
    ours, django = ApiHeaders({}), ResponseHeaders({})
    for earlier_name, earlier_value in first:
        assert outcome(ours, earlier_name, earlier_value) == outcome(django, earlier_name, earlier_value)
    assert outcome(ours, name, value) == outcome(django, name, value)
    if isinstance(name, str):
        assert (name in ours) == (name in django)
        assert (name.upper() in ours) == (name.upper() in django)
        assert ours.get(name, "missing") == django.get(name, "missing")
    assert list(ours.items()) == list(django.items())
    assert len(ours.items()) == len(django.items()) and dict(ours) == dict(django)


def built(cls: type, data: dict[Any, Any]) -> tuple[str, Any]:
    """What building headers from ``data`` gives: the store, or the error's type."""
    try:
        headers = cls(data)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return "error", type(exc)
    return "stored", [(k, v, type(k), type(v)) for k, (k, v) in headers._store.items()]


class Marked(str):
    """A ``str`` subclass (as Django's ``SafeString``): stored as it is, by Django's own path."""


@hypothesis_settings(max_examples=400, deadline=None)
@given(data=st.dictionaries(st.one_of(NAMES, TEXT.map(Marked)), st.one_of(VALUES, TEXT.map(Marked)), max_size=8))
def test_building_from_a_dict_stores_or_fails_as_django(data: dict[Any, Any]) -> None:
    # the whole dict checked at once when every name and value is a plain ASCII str without
    # CR or LF; anything else goes header by header: the same store or the same error either way
    assert built(ApiHeaders, data) == built(ResponseHeaders, data)


def test_a_completions_headers_are_built_in_one_pass() -> None:
    data = {"x-gateway-attempts": "1", "x-gateway-provider": "openai", "Content-Type": "application/json"}
    headers = ApiHeaders(data)
    assert headers._store == {k.lower(): (k, v) for k, v in data.items()}
    assert list(headers.items()) == list(ResponseHeaders(data).items())


def test_lookups_setdefault_and_removal_as_django() -> None:
    for headers in (
        ApiHeaders({"Content-Type": "application/json"}),
        ResponseHeaders({"Content-Type": "application/json"}),
    ):
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("content-type", "text/html")  # present under another case: kept
        assert headers["CONTENT-TYPE"] == "application/json" and headers.get("x-frame-options") == "DENY"
        assert "x-frame-options" in headers and "Vary" not in headers and headers.get("Vary") is None
        assert ("Content-Type", "application/json") in headers.items()
        del headers["X-Frame-Options"]
        assert list(headers.items()) == [("Content-Type", "application/json")]
    with pytest.raises(BadHeaderError):
        ApiHeaders({"x-evil": "a\nb"})
    with pytest.raises(UnicodeError):
        ApiHeaders({"nàme": "value"})
    assert ApiHeaders({"x-price": "€1"})["x-price"] == ResponseHeaders({"x-price": "€1"})["x-price"]  # MIME-encoded


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json", "x-gateway-attempts": "1", "x-gateway-cost-usd": "0.000012300"},
        {"x-gateway-attempts": "2"},  # no content type: Django's default
        {},
    ],
)
@pytest.mark.parametrize("body", [b'{"id":"chatcmpl-1"}', b"", None])
def test_api_responses_are_the_responses_django_builds(headers: dict[str, str], body: bytes | None) -> None:
    ours = api_response(body, status=201, headers=headers)
    django = HttpResponse(body, status=201, headers=headers)
    assert isinstance(ours.headers, ApiHeaders) and isinstance(ours, HttpResponse)
    # every attribute Django's constructor sets, with the same value (the headers and cookies compared apart)
    assert set(vars(ours)) == set(vars(django))
    for name, value in vars(django).items():
        if name not in ("headers", "cookies"):
            assert vars(ours)[name] == value, name
    assert dict(ours.cookies) == dict(django.cookies) == {} and type(ours.cookies) is type(django.cookies)
    assert (ours.status_code, list(ours.items()), ours.content, ours.charset) == (
        django.status_code,
        list(django.items()),
        django.content,
        django.charset,
    )
    chunks = [b"data: 1\n\n", b"data: [DONE]\n\n"]
    stream = api_stream(iter(chunks), status=200, headers=headers)
    django_stream = StreamingHttpResponse(iter(chunks), status=200, headers=headers)
    assert isinstance(stream.headers, ApiHeaders)
    assert list(stream.items()) == list(django_stream.items())
    assert b"".join(stream) == b"".join(django_stream)
