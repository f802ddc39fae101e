"""The staff logins, throttled (accounts/throttling.py): ``/api/token/`` and ``/admin/login/``."""

from __future__ import annotations

import math
from typing import Any

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts.throttling import LoginRateThrottle, client_address, login_attempt
from gatewaysite.api.errors import error_response


class ThrottledTokenObtainPairView(TokenObtainPairView):
    throttle_classes = [LoginRateThrottle]


@never_cache
@login_not_required
def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin's login view behind the same throttle as ``/api/token/`` (POSTs only)."""
    if request.method == "POST":
        wait = login_attempt(str(request.POST.get("username") or ""), client_address(request))
        if wait is not None:
            seconds = math.ceil(wait)
            return error_response(
                f"Too many login attempts. Expected available in {seconds} seconds.",
                status_code=429,
                error_type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(seconds)},
            )
    return admin.site.login(request, extra_context)
