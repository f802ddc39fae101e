"""Writes on client keys and teams. The admin and the management commands call these."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.keys import generate_key, generate_secret, hash_key
from accounts.models import BudgetOutagePolicy, BudgetPeriod, ClientKey, Team
from gatewaysite.clock import now


def team_get_or_create(*, name: str) -> Team:
    team, _ = Team.objects.get_or_create(name=name)
    return team


@transaction.atomic
def key_issue(
    *,
    name: str,
    owner: str = "",
    team: Team | None = None,
    allowed_models: list[str] | None = None,
    strategy: str = "",
    budget_usd: Decimal | None = None,
    budget_period: str = BudgetPeriod.MONTH,
    budget_when_redis_down: str = BudgetOutagePolicy.CLOSED,
    expires_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
) -> tuple[ClientKey, str]:
    """Create a key; return it with its secret, which is not kept anywhere."""
    full_key, prefix = generate_key()
    while ClientKey.objects.filter(prefix=prefix).exists():  # 36^8 prefixes: a clash is rare but possible
        full_key, prefix = generate_key()
    key = ClientKey(
        name=name,
        owner=owner,
        team=team,
        prefix=prefix,
        secret_hash=hash_key(full_key),
        allowed_models=allowed_models or [],
        strategy=strategy,
        budget_usd=budget_usd,
        budget_period=budget_period,
        budget_when_redis_down=budget_when_redis_down,
        expires_at=expires_at,
        metadata=metadata or {},
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    key.full_clean()
    key.save()
    return key, full_key


def key_revoke(*, key: ClientKey) -> ClientKey:
    if not key.revoked:
        key.revoked = True
        key.revoked_at = now()
        key.save(update_fields=["revoked", "revoked_at"])
    return key


KEY_UPDATABLE = frozenset(
    {
        "name",
        "owner",
        "team",
        "allowed_models",
        "strategy",
        "budget_usd",
        "budget_period",
        "budget_when_redis_down",
        "rpm_limit",
        "tpm_limit",
        "expires_at",
        "metadata",
    }
)
TEAM_UPDATABLE = frozenset({"name", "budget_usd", "budget_period", "budget_when_redis_down", "rpm_limit", "tpm_limit"})


def _apply(obj: ClientKey | Team, allowed: frozenset[str], changes: dict[str, Any]) -> list[str]:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change: {', '.join(sorted(unknown))}")
    changed = sorted(name for name, value in changes.items() if getattr(obj, name) != value)
    for name in changed:
        setattr(obj, name, changes[name])
    obj.full_clean()
    if changed:
        obj.save(update_fields=changed)
    return changed


@transaction.atomic
def key_update(*, key: ClientKey, changes: dict[str, Any]) -> list[str]:
    """Change a key's settings (``KEY_UPDATABLE``); returns the names of the fields that changed.

    Raises ``ValueError`` for a field that cannot be changed, ``ValidationError`` for bad values.
    """
    return _apply(key, KEY_UPDATABLE, changes)


@transaction.atomic
def key_rotate(*, key: ClientKey, grace_seconds: int) -> tuple[ClientKey, str]:
    """Give the key a new secret; the old one keeps working for ``grace_seconds`` (0: not at all).

    The lookup prefix stays, so the key keeps its usage history, budget and limits. Rotating
    again within a grace period ends the older secret's grace at once: at most two secrets
    work at any time.
    """
    if key.revoked:
        raise ValueError("a revoked key cannot be rotated")
    full_key = generate_secret(key.prefix)
    moment = now()
    key.previous_secret_hash = key.secret_hash if grace_seconds > 0 else ""
    key.previous_secret_expires_at = moment + timedelta(seconds=grace_seconds) if grace_seconds > 0 else None
    key.secret_hash = hash_key(full_key)
    key.rotated_at = moment
    key.save(update_fields=["secret_hash", "previous_secret_hash", "previous_secret_expires_at", "rotated_at"])
    return key, full_key


@transaction.atomic
def team_create(
    *,
    name: str,
    budget_usd: Decimal | None = None,
    budget_period: str = BudgetPeriod.MONTH,
    budget_when_redis_down: str = BudgetOutagePolicy.CLOSED,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
) -> Team:
    team = Team(
        name=name,
        budget_usd=budget_usd,
        budget_period=budget_period,
        budget_when_redis_down=budget_when_redis_down,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    team.full_clean()
    team.save()
    return team


@transaction.atomic
def team_update(*, team: Team, changes: dict[str, Any]) -> list[str]:
    """Change a team's settings (``TEAM_UPDATABLE``); returns the names of the fields that changed."""
    return _apply(team, TEAM_UPDATABLE, changes)
