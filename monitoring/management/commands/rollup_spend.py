"""``manage.py rollup_spend [--since YYYY-MM-DD]``: recompute the daily spend rollups (default: yesterday and today)."""

from __future__ import annotations

from datetime import UTC, date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gatewaysite.clock import now
from monitoring.spend import spend_rollup_refresh


class Command(BaseCommand):
    help = "Recompute the daily spend rollups of the operator overview from the usage records."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--since", help="First day to recompute (YYYY-MM-DD); default: yesterday.")

    def handle(self, *args: Any, **options: Any) -> None:
        today = now().astimezone(UTC).date()
        try:
            since = date.fromisoformat(options["since"]) if options["since"] else today - timedelta(days=1)
        except ValueError:
            raise CommandError("--since must be a date, YYYY-MM-DD.") from None
        if since > today:
            raise CommandError("--since is in the future.")
        days = [since + timedelta(days=n) for n in range((today - since).days + 1)]
        rows = spend_rollup_refresh(days=days)
        self.stdout.write(f"{len(days)} day(s) recomputed, {rows} rollup row(s).")
