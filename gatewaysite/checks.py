"""System checks of the gateway's own settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string


@register(Tags.security, deploy=True)
def check_csrf_middleware(app_configs: Any, **kwargs: Any) -> list[Error]:
    """Stands in for Django's security.W003 (silenced: it looks for Django's class by name only)."""
    for path in settings.MIDDLEWARE:
        middleware = import_string(path)
        if isinstance(middleware, type) and issubclass(middleware, CsrfViewMiddleware):
            return []
    return [Error("No CSRF middleware in MIDDLEWARE: the admin's forms would be unprotected.", id="gatewaysite.E001")]
