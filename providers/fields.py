"""A model field whose value is encrypted in the database and plain in Python."""

from __future__ import annotations

from typing import Any

from django.db import models

from providers.encryption import decrypt, encrypt


class EncryptedTextField(models.TextField):
    """Text kept encrypted at rest (providers/encryption.py); reads decrypt, writes encrypt.

    Every write path (admin, services, ``gateway_config import``, ``QuerySet.update``,
    the shell) goes through ``get_prep_value``, so none can store the plain value. The
    empty string stays empty: "no key stored" is not a secret. Each write encrypts with
    a fresh IV, so the column cannot be filtered on by value, which nothing needs.
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
