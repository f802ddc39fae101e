"""Writes on providers that are not plain admin edits."""

from __future__ import annotations

from django.db import transaction

from providers.models import Provider


@transaction.atomic
def provider_keys_rotate() -> int:
    """Re-encrypt every stored provider API key with the first of ``GATEWAY_ENCRYPTION_KEYS``.

    Reading decrypts with any configured key, writing encrypts with the first. The plain
    keys do not change; the database triggers still bump the configuration version, so
    every process reloads its snapshot once, to the same keys. Rows are locked for the
    duration, so an admin edit cannot be overwritten.
    """
    rotated = 0
    for provider in Provider.objects.select_for_update().exclude(api_key="").only("pk", "api_key"):
        Provider.objects.filter(pk=provider.pk).update(api_key=provider.api_key)
        rotated += 1
    return rotated
