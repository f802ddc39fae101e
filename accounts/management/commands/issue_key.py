"""Issue a client key non-interactively; the secret is the last line of the output.

Every invalid option ends the command with a one-line message and a non-zero exit
(``CommandError``), never a traceback: values are checked against the model's own
field constraints (e.g. the budget's digits and decimal places), so the command and
the admin accept exactly the same keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import BudgetOutagePolicy, BudgetPeriod, ClientKey, Team
from accounts.services import key_issue, team_get_or_create
from routing.strategies.registry import strategy_names


def _messages(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)


def parse_budget(value: str) -> Decimal | None:
    if not value:
        return None
    try:
        budget = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--budget must be a decimal number of USD, got {value!r}") from None
    if not budget.is_finite() or budget < 0:
        raise CommandError(f"--budget must be a positive amount of USD, got {value!r}")
    try:  # the model field's own limits (digits, decimal places), whatever they are
        ClientKey._meta.get_field("budget_usd").clean(budget, None)
    except ValidationError as error:
        raise CommandError(f"--budget {value}: {_messages(error)}") from None
    return budget


def parse_expiry(value: str) -> datetime | None:
    if not value:
        return None
    try:
        expires = parse_datetime(value)
    except ValueError:  # well formed but impossible, e.g. month 13
        expires = None
    if expires is None:
        raise CommandError(f"--expires must be an ISO 8601 date-time such as 2030-01-01T00:00:00Z, got {value!r}")
    if timezone.is_naive(expires):
        expires = timezone.make_aware(expires, UTC)  # documented: without an offset it is UTC
    return expires


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
        parser.add_argument("--expires", default="", help="ISO 8601 date-time; without an offset it is UTC.")
        parser.add_argument("--rpm", type=int, default=None, help="Requests per minute; default: no limit.")
        parser.add_argument("--tpm", type=int, default=None, help="Tokens per minute; default: no limit.")

    def handle(self, *args: Any, **options: Any) -> None:
        budget = parse_budget(options["budget"])
        expires = parse_expiry(options["expires"])
        if options["strategy"] and options["strategy"] not in strategy_names():
            raise CommandError(
                f"--strategy {options['strategy']!r} is unknown; use one of: {', '.join(strategy_names())}"
            )
        for flag in ("rpm", "tpm"):
            if options[flag] is not None and options[flag] < 1:
                raise CommandError(f"--{flag} must be a positive integer")
        if options["team"]:
            try:
                Team._meta.get_field("name").clean(options["team"], None)
            except ValidationError as error:
                raise CommandError(f"--team: {_messages(error)}") from None
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        try:
            with transaction.atomic():  # an invalid key must not leave a new team behind
                team = team_get_or_create(name=options["team"]) if options["team"] else None
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
        except ValidationError as error:
            raise CommandError(f"the key was not issued: {_messages(error)}") from None
        self.stdout.write(f"Issued key {key.display_prefix} ({key.name}); store it now, it is not shown again:")
        self.stdout.write(secret)
