"""Spend counters and budgets (placeholder: budgets are filled in by the cost work).

``reserve`` runs before the upstream call; ``settle_counters`` returns the counter
increments that go into the same round trip as the usage event.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from accounts.keycache import KeyInfo
from usage.events import CounterIncrement

if TYPE_CHECKING:
    from routing.strategies.base import RouteRequest


def key_spend_counter(key_id: int) -> str:
    return f"gw:spend:key:{key_id}"


@dataclass
class Reservation:
    key: KeyInfo
    amount: Decimal


def needs_reservation(key: KeyInfo) -> bool:
    return key.budget_usd is not None or key.team_budget_usd is not None


def reserve(key: KeyInfo, route: RouteRequest) -> Reservation | None:
    """Hold the request's estimated maximum cost against the key's and team's budgets."""
    return None


def release(reservation: Reservation | None) -> None:
    return None


def settle_counters(key: KeyInfo, reservation: Reservation | None, cost: Decimal | None) -> list[CounterIncrement]:
    from usage.cost import to_picodollars

    return [CounterIncrement(key_spend_counter(key.id), to_picodollars(cost) if cost is not None else 0)]
