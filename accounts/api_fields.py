"""What the key and team API accepts and returns: field parsing and JSON shapes.

Parsing turns a JSON body into keyword arguments for the services in accounts/services.py;
any bad value is a 400 in OpenAI's error shape naming the field (``param``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from accounts.models import BudgetOutagePolicy, BudgetPeriod, ClientKey, Team
from gatewaysite.api.errors import InvalidRequest
from gatewaysite.clock import now
from gatewaysite.config.choices import strategy_names


def field_error(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", code="invalid_field", param=field)


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise field_error(field, "must be a string")
    return value.strip()


def _name(field: str, value: Any) -> str:
    text = _text(field, value)
    if not text or len(text) > 100:
        raise field_error(field, "must be 1 to 100 characters")
    return text


def _limit(field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise field_error(field, "must be a positive integer, or null for no limit")
    return value


def _budget(field: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise field_error(field, 'must be an amount in USD as a string, e.g. "25.50", or null')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise field_error(field, 'must be an amount in USD, e.g. "25.50"') from None
    if not amount.is_finite() or not 0 <= amount < 10**12 or _decimals(amount) > 6:
        raise field_error(field, "must be from 0 to 10^12 USD with at most 6 decimals")
    return amount


def _choice(choices: list[str]) -> Callable[[str, Any], str]:
    def parse(field: str, value: Any) -> str:
        if value not in choices:
            raise field_error(field, f"must be one of {', '.join(choices)}")
        return str(value)

    return parse


def _models(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(m, str) and m.strip() for m in value):
        raise field_error(field, 'must be a list of model names, e.g. ["gpt-4o"]; empty: all models')
    return [m.strip() for m in value]


def _strategy(field: str, value: Any) -> str:
    text = _text(field, value or "")
    if text and text not in strategy_names():
        raise field_error(field, f"unknown strategy; valid: {', '.join(strategy_names())}, or empty")
    return text


def _moment(field: str, value: Any) -> datetime | None:
    if value is None:
        return None
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise field_error(field, 'must be an ISO 8601 date-time, e.g. "2027-01-31T00:00:00Z", or null')
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _metadata(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise field_error(field, "must be a JSON object")
    return value


def _team(field: str, value: Any) -> Team | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        team = Team.objects.filter(pk=value).first()
    elif isinstance(value, str):
        team = Team.objects.filter(name=value).first()
    else:
        raise field_error(field, "must be a team name or id, or null")
    if team is None:
        raise field_error(field, f"no team {value!r}; create it with POST /v1/admin/teams")
    return team


KEY_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "name": _name,
    "owner": _text,
    "team": _team,
    "allowed_models": _models,
    "strategy": _strategy,
    "budget_usd": _budget,
    "budget_period": _choice([c for c, _ in BudgetPeriod.choices]),
    "budget_when_redis_down": _choice([c for c, _ in BudgetOutagePolicy.choices]),
    "rpm_limit": _limit,
    "tpm_limit": _limit,
    "expires_at": _moment,
    "metadata": _metadata,
}

TEAM_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "name": _name,
    "budget_usd": _budget,
    "budget_period": _choice([c for c, _ in BudgetPeriod.choices]),
    "budget_when_redis_down": _choice([c for c, _ in BudgetOutagePolicy.choices]),
    "rpm_limit": _limit,
    "tpm_limit": _limit,
}


def parse_fields(
    data: Any, spec: dict[str, Callable[[str, Any], Any]], *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_body")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise field_error(unknown[0], f"unknown field; accepted: {', '.join(spec)}")
    for name in required:
        if name not in data:
            raise field_error(name, "is required")
    return {name: spec[name](name, value) for name, value in data.items()}


def validation_error(error: ValidationError) -> InvalidRequest:
    """A model validation error (``full_clean``) as a 400 naming the first field."""
    if hasattr(error, "error_dict"):
        field, errors = next(iter(error.error_dict.items()))
        return field_error(field, " ".join(m for e in errors for m in e.messages))
    return InvalidRequest(" ".join(error.messages), code="invalid_field")


@contextmanager
def as_request_errors() -> Iterator[None]:
    """Around a service call: its model validation error becomes the 400 of :func:`validation_error`."""
    try:
        yield
    except ValidationError as error:
        raise validation_error(error) from None


def _usd(amount: Decimal | None) -> str | None:
    return format(amount.normalize(), "f") if amount is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def key_status(key: ClientKey) -> str:
    if key.revoked:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now():
        return "expired"
    return "active"


def key_json(key: ClientKey, *, secret: str | None = None) -> dict[str, Any]:
    grace = key.previous_secret_expires_at if key.previous_secret_hash else None
    data: dict[str, Any] = {
        "object": "client_key",
        "id": key.id,
        "prefix": key.prefix,
        "display_prefix": key.display_prefix,
        "name": key.name,
        "owner": key.owner,
        "team": {"id": key.team.id, "name": key.team.name} if key.team is not None else None,
        "status": key_status(key),
        "allowed_models": list(key.allowed_models or []),
        "strategy": key.strategy,
        "budget_usd": _usd(key.budget_usd),
        "budget_period": key.budget_period,
        "budget_when_redis_down": key.budget_when_redis_down,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "expires_at": _iso(key.expires_at),
        "revoked_at": _iso(key.revoked_at),
        "rotated_at": _iso(key.rotated_at),
        "previous_secret_valid_until": _iso(grace) if grace is not None and grace > now() else None,
        "metadata": key.metadata,
        "created_at": _iso(key.created_at),
    }
    if secret is not None:
        data["secret"] = secret  # shown once: only the hash is kept
    return data


def team_json(team: Team, *, key_count: int | None = None) -> dict[str, Any]:
    return {
        "object": "team",
        "id": team.id,
        "name": team.name,
        "budget_usd": _usd(team.budget_usd),
        "budget_period": team.budget_period,
        "budget_when_redis_down": team.budget_when_redis_down,
        "rpm_limit": team.rpm_limit,
        "tpm_limit": team.tpm_limit,
        "key_count": key_count if key_count is not None else team.keys.count(),
        "created_at": _iso(team.created_at),
    }


def _decimals(amount: Decimal) -> int:
    """Digits after the point of a finite amount, trailing zeros aside."""
    exponent = amount.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
