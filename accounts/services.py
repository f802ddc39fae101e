"""Writes on client keys and teams. The admin and the management commands call these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.keys import generate_key, hash_key
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
