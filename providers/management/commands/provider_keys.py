"""``manage.py provider_keys generate | rotate | status | derived-key``: encryption keys of provider API keys.

Rotation (providers/encryption.py, docs/configuration.md): generate a key, put it first
in ``GATEWAY_ENCRYPTION_KEYS``, restart, ``rotate``, check with ``status``, then drop
the old key from the list.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from providers.encryption import UndecryptableSecret, derived_key, generate_key
from providers.selectors import provider_keys_encryption
from providers.services import provider_keys_rotate


class Command(BaseCommand):
    help = "Manage the encryption of provider API keys at rest (GATEWAY_ENCRYPTION_KEYS)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("generate", help="Print a new Fernet key for GATEWAY_ENCRYPTION_KEYS.")
        sub.add_parser("rotate", help="Re-encrypt every stored provider API key with the first configured key.")
        sub.add_parser("status", help="Show which configured key each stored provider API key is encrypted with.")
        sub.add_parser("derived-key", help="Print the key derived from SECRET_KEY (used when the variable is unset).")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "generate":
            self.stdout.write(generate_key())
        elif action == "derived-key":
            self.stdout.write(derived_key(settings.SECRET_KEY))
        elif action == "rotate":
            try:
                count = provider_keys_rotate()
            except UndecryptableSecret as error:
                raise CommandError(str(error)) from None
            self.stdout.write(f"Re-encrypted {count} stored provider API key(s) with the first configured key.")
        else:
            self._status()

    def _status(self) -> None:
        source = "GATEWAY_ENCRYPTION_KEYS" if settings.GATEWAY_ENCRYPTION_KEYS else "the key derived from SECRET_KEY"
        self.stdout.write(f"Encrypting with {source}.")
        rows = provider_keys_encryption()
        unreadable = [name for name, index in rows if index is None]
        for name, index in rows:
            where = "NOT decryptable with any configured key" if index is None else f"key {index + 1}"
            self.stdout.write(f"  {name}: {where}{' (current)' if index == 0 else ''}")
        old = sum(1 for _, index in rows if index)
        self.stdout.write(f"{len(rows)} stored key(s); {old} on an older key; {len(unreadable)} unreadable.")
        if unreadable:
            raise CommandError(f"cannot decrypt the stored key of: {', '.join(unreadable)}")
