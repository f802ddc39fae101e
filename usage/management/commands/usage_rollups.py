"""``manage.py usage_rollups rebuild [--since YYYY-MM-DD] [--until YYYY-MM-DD]``: recompute hourly rollups.

Rollups are kept exact as records are ingested (usage/rollups.py); this recomputes
them from the raw records, for example after records were written by hand. Hours whose
raw records were dropped by retention are left as they are. ``check`` compares every
hour in the range with its raw records and lists the ones that differ.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gatewaysite.clock import now
from usage.rollups import rollup_differences, rollup_rebuild


class Command(BaseCommand):
    help = "Recompute (rebuild) or verify (check) the hourly usage rollups from the usage records."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["rebuild", "check"])
        parser.add_argument("--since", help="First day (YYYY-MM-DD); default: yesterday.")
        parser.add_argument("--until", help="Last day, included (YYYY-MM-DD); default: today.")

    def handle(self, *args: Any, **options: Any) -> None:
        today = now().astimezone(UTC).date()
        try:
            since = date.fromisoformat(options["since"]) if options["since"] else today - timedelta(days=1)
            until = date.fromisoformat(options["until"]) if options["until"] else today
        except ValueError:
            raise CommandError("--since and --until must be dates, YYYY-MM-DD.") from None
        if until < since:
            raise CommandError("--until is before --since.")
        start = datetime.combine(since, time(0), tzinfo=UTC)
        end = datetime.combine(until + timedelta(days=1), time(0), tzinfo=UTC)
        if options["action"] == "rebuild":
            rows = rollup_rebuild(start, end)
            self.stdout.write(f"{since}..{until}: {rows} rollup row(s) recomputed.")
            return
        differ = rollup_differences(start, end)
        for hour in differ:
            self.stdout.write(f"differs: {hour.isoformat()}")
        self.stdout.write(f"{since}..{until}: {len(differ)} hour(s) differ from their records.")
        if differ:
            raise CommandError("rollups differ from the records")
