"""List or replay usage dead letters: ``manage.py usage_deadletters list|replay [ids...] [--all]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.deadletters import deadletter_replay
from usage.models import UsageDeadLetter


class Command(BaseCommand):
    help = "List usage events the consumer gave up on, or replay them after a fix (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="Dead letters not replayed yet (--all: every one).")
        listing.add_argument("--all", action="store_true")
        replay = sub.add_parser("replay", help="Ingest the given dead letters again, or every waiting one (--all).")
        replay.add_argument("ids", nargs="*", type=int)
        replay.add_argument("--all", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            letters = UsageDeadLetter.objects.order_by("first_seen", "id")
            if not options["all"]:
                letters = letters.filter(replayed_at__isnull=True)
            for letter in letters:
                state = f"replayed {letter.replayed_at:%Y-%m-%dT%H:%M:%SZ}" if letter.replayed_at else "waiting"
                self.stdout.write(
                    f"{letter.pk}\t{letter.request_id or '-'}\t{letter.attempts} tries\t{state}\t{letter.error}"
                )
            return
        if bool(options["ids"]) == bool(options["all"]):
            raise CommandError("give dead letter ids, or --all for every one not replayed yet")
        outcome = deadletter_replay(ids=None if options["all"] else options["ids"])
        self.stdout.write(f"replayed {len(outcome.replayed)}, failed {len(outcome.failed)}")
        for pk, error in outcome.failed.items():
            self.stderr.write(f"{pk}: {error}")
        if outcome.failed:
            raise CommandError(f"{len(outcome.failed)} dead letter(s) failed again")
