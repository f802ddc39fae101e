"""DRF authentication for client API keys (the /v1 endpoints)."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.keycache import KeyInfo, bearer_token, key_cache


class ClientKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[KeyInfo, str]:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        return key_cache.authenticate(token), token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class HasClientKey(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        return isinstance(request.user, KeyInfo)


def client_key(request: Request) -> KeyInfo:
    """The key a /v1 request was authenticated with (``ClientKeyAuthentication``).

    ``HasClientKey`` refuses any other request before the view runs; the check here is what
    lets the type checker (and a reader) know ``request.user`` is a ``KeyInfo``.
    """
    key = request.user
    if not isinstance(key, KeyInfo):
        raise NotAuthenticated()
    return key
