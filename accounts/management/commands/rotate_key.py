"""Give a client key a new secret; the old one keeps working for a grace period."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.commands.revoke_key import key_by_prefix
from accounts.services import key_rotate


class Command(BaseCommand):
    help = "Rotate a client API key: print a new secret (shown only this once); the old one works for --grace seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")
        parser.add_argument(
            "--grace",
            type=int,
            default=settings.GATEWAY["KEY_ROTATION_GRACE_SECONDS"],
            help="Seconds the old secret keeps working (0: stops at once). Default: GATEWAY_KEY_ROTATION_GRACE_SECONDS.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        grace = options["grace"]
        if not 0 <= grace <= 30 * 86_400:
            raise CommandError("--grace must be from 0 to 2592000 seconds (30 days)")
        key = key_by_prefix(options["prefix"])
        if key.revoked:
            raise CommandError(f"key {key.display_prefix} is revoked; issue a new one")
        key, secret = key_rotate(key=key, grace_seconds=grace)
        self.stdout.write(
            f"Rotated key {key.display_prefix} ({key.name}); the old secret works for {grace} s more. "
            "Store the new one now, it is not shown again:"
        )
        self.stdout.write(secret)
