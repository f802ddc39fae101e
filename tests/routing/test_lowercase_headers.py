"""``lowercase_headers`` (routing/views/completions.py) holds what Django's ``request.headers``
holds, by lower-case name, whatever names clients send, past the bound of remembered names too."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.request import Request

from routing.views import completions
from routing.views.completions import lowercase_headers

NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)


def _django(request: Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request._request.headers.items()}


@hypothesis_settings(max_examples=200, deadline=None)
@given(headers=st.dictionaries(NAME, st.text(alphabet="abc 123", max_size=8), max_size=8))
def test_the_headers_are_djangos_by_lower_case_name(headers: dict[str, str]) -> None:
    extra = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    request = Request(
        RequestFactory().post("/v1/chat/completions", data=b"{}", content_type="application/json", **extra)
    )
    assert lowercase_headers(request) == _django(request)


def test_past_the_bound_names_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completions, "_HEADER_NAMES", {})
    monkeypatch.setattr(completions, "HEADER_NAMES_KEPT", 3)
    extra = {f"HTTP_X_NAME_{i}": str(i) for i in range(10)}
    request = Request(
        RequestFactory().post("/v1/chat/completions", data=b"{}", content_type="application/json", **extra)
    )
    first = lowercase_headers(request)
    assert first == _django(request) and first["x-name-9"] == "9"
    assert len(completions._HEADER_NAMES) == 3  # remembered no more than the bound
    assert lowercase_headers(request) == first
