"""Reads on providers that are not plain admin lists."""

from __future__ import annotations

from django.db.models import TextField
from django.db.models.functions import Cast

from providers.encryption import key_index
from providers.models import Provider


def provider_keys_encryption() -> list[tuple[str, int | None]]:
    """(provider name, index of the configured key that decrypts its stored API key; None: none does)."""
    rows = (
        Provider.objects.exclude(api_key="")
        .annotate(ciphertext=Cast("api_key", TextField()))  # a plain text column: not decrypted on read
        .order_by("name")
        .values_list("name", "ciphertext")
    )
    return [(name, key_index(ciphertext)) for name, ciphertext in rows]
