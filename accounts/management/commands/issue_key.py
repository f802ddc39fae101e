"""Issue a client key non-interactively; the secret is the last line of the output."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from accounts.models import BudgetOutagePolicy, BudgetPeriod
from accounts.services import key_issue, team_get_or_create


class Command(BaseCommand):
    help = "Issue a client API key and print its secret (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", default="")
        parser.add_argument("--team", default="")
        parser.add_argument("--models", default="", help="Comma-separated public model names; empty: all.")
        parser.add_argument("--strategy", default="")
        parser.add_argument("--budget", default="", help="USD limit per --budget-period, e.g. 5 or 0.005.")
        parser.add_argument("--budget-period", default=BudgetPeriod.MONTH, choices=[c for c, _ in BudgetPeriod.choices])
        parser.add_argument(
            "--budget-when-redis-down",
            default=BudgetOutagePolicy.CLOSED,
            choices=[c for c, _ in BudgetOutagePolicy.choices],
            help="closed: refuse (503) while Redis is down; open: serve within a small allowance per process.",
        )
        parser.add_argument("--expires", default="", help="ISO 8601 date-time.")
        parser.add_argument("--rpm", type=int, default=None, help="Requests per minute; default: no limit.")
        parser.add_argument("--tpm", type=int, default=None, help="Tokens per minute; default: no limit.")

    def handle(self, *args: Any, **options: Any) -> None:
        budget = None
        if options["budget"]:
            try:
                budget = Decimal(options["budget"])
            except InvalidOperation:
                raise CommandError("--budget must be a decimal number") from None
            if (
                not budget.is_finite() or not 0 <= budget < 10**12 or budget.normalize().as_tuple().exponent < -6  # type: ignore[operator]
            ):
                raise CommandError("--budget must be an amount in USD from 0 to 10^12, with at most 6 decimals")
        expires = None
        if options["expires"]:
            expires = parse_datetime(options["expires"])
            if expires is None:
                raise CommandError("--expires must be an ISO 8601 date-time")
        for flag in ("rpm", "tpm"):
            if options[flag] is not None and options[flag] < 1:
                raise CommandError(f"--{flag} must be a positive integer")
        team = team_get_or_create(name=options["team"]) if options["team"] else None
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        key, secret = key_issue(
            name=options["name"],
            owner=options["owner"],
            team=team,
            allowed_models=models,
            strategy=options["strategy"],
            budget_usd=budget,
            budget_period=options["budget_period"],
            budget_when_redis_down=options["budget_when_redis_down"],
            expires_at=expires,
            rpm_limit=options["rpm"],
            tpm_limit=options["tpm"],
        )
        self.stdout.write(f"Issued key {key.display_prefix} ({key.name}); store it now, it is not shown again:")
        self.stdout.write(secret)
