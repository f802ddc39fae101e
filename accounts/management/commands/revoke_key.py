"""Revoke a client key by its prefix; every server process refuses it within a poll interval."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.keys import KEY_MARK
from accounts.models import ClientKey
from accounts.services import key_revoke


def key_by_prefix(prefix: str) -> ClientKey:
    prefix = prefix.removeprefix(KEY_MARK).rstrip(".")
    key = ClientKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise CommandError(f"no client key with the prefix {prefix!r}")
    return key


class Command(BaseCommand):
    help = "Revoke a client API key (by its prefix, e.g. gwk_ab12cd34 or ab12cd34)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        key = key_by_prefix(options["prefix"])
        if key.revoked:
            self.stdout.write(f"Key {key.display_prefix} ({key.name}) was already revoked.")
            return
        key_revoke(key=key)
        self.stdout.write(f"Revoked key {key.display_prefix} ({key.name}).")
