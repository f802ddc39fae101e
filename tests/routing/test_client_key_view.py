"""``ClientKeyView.perform_authentication`` (routing/views/completions.py) does what DRF's
``request.user`` does on a request not authenticated yet, without its exceptions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework.request import Request, WrappedAttributeError

from routing.views.completions import ClientKeyView


class _Authenticator:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls = 0

    def authenticate(self, request: Request) -> Any:
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


def _drf_request(authenticator: _Authenticator) -> Request:
    return Request(RequestFactory().post("/v1/chat/completions"), authenticators=[authenticator])


@pytest.mark.parametrize("ours", [True, False])
def test_authentication_runs_once_and_sets_the_user_as_drf(ours: bool) -> None:
    authenticator = _Authenticator(("the-user", "the-auth"))
    request = _drf_request(authenticator)
    if ours:
        ClientKeyView().perform_authentication(request)
    else:
        _ = request.user  # DRF's own road
    assert (request.user, request.auth, authenticator.calls) == ("the-user", "the-auth", 1)


@pytest.mark.parametrize("ours", [True, False])
def test_an_attribute_error_while_authenticating_is_wrapped_as_drf(ours: bool) -> None:
    request = _drf_request(_Authenticator(AttributeError("no such thing")))
    with pytest.raises(WrappedAttributeError, match="no such thing") as raised:
        if ours:
            ClientKeyView().perform_authentication(request)
        else:
            _ = request.user
    assert isinstance(raised.value.__context__, AttributeError)


def test_a_user_already_set_is_kept() -> None:
    authenticator = _Authenticator(("other", None))
    request = _drf_request(authenticator)
    request.user = "set-before"  # DRF's setter: on both requests
    ClientKeyView().perform_authentication(request)
    assert (request.user, authenticator.calls) == ("set-before", 0)
