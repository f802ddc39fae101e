"""System check: the encryption keys of provider API keys are usable (runs with ``migrate``, ``check``)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from providers.encryption import fernets


@register(Tags.security)
def check_encryption_keys(app_configs: Any, **kwargs: Any) -> list[Error]:
    try:
        fernets()
    except ImproperlyConfigured as error:
        return [Error(str(error), id="providers.E001")]
    return []
