"""Staff JWTs (the strategy switch, cost reports, ``/api/token/refresh/``): malformed claims are a 401.

simplejwt checks the signature, the expiry and the token type, then looks the user up
with whatever the ``user_id`` claim holds: a list or an object there (in a correctly
signed token) reached the database lookup as a ``TypeError``, a 500. Here the claim must
be a user id (a positive integer, or its decimal string), else the token is refused as
invalid, in the OpenAI error shape like every other 401.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

_MAX_ID = 2**63 - 1  # a bigint primary key


def token_user_id(token: Token) -> int:
    """The user id a token names, or ``InvalidToken`` when its claim is not a user id."""
    value: Any = token.get(api_settings.USER_ID_CLAIM)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_ID:
        raise InvalidToken("Token contained no recognizable user identification")
    return value


class StaffJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication, with the user id claim checked before any lookup."""

    def get_user(self, validated_token: Token) -> Any:
        user_id = token_user_id(validated_token)
        try:
            user = self.user_model.objects.get(**{api_settings.USER_ID_FIELD: user_id})
        except self.user_model.DoesNotExist:
            raise AuthenticationFailed("User not found", code="user_not_found") from None
        if not user.is_active:
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        return user


class CheckedTokenRefreshSerializer(TokenRefreshSerializer):
    """``/api/token/refresh/``: the refresh token must name an existing, active user (simplejwt's
    own check raised ``DoesNotExist`` or ``TypeError`` on a deleted user or a malformed claim)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])
        user_id = token_user_id(refresh)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed("No active account found for the given token.", code="no_active_account")
        return super().validate(attrs)
