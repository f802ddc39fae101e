"""Prices as the request path sees them: one row of a price list, resolved, and the lookup
of the row in effect at a moment. The rows live in ``providers.models.PricingRow``, the
arithmetic in ``providers/pricing/cost.py``; the configuration snapshot holds these
(``routing/config/snapshot.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.models import PricingRow


@dataclass(frozen=True, slots=True)
class Price:
    id: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    effective_from: datetime
    cache_write_1h_per_mtok: Decimal | None = None  # None: the cache-write price


def price_in_effect(prices: Iterable[Price], at: datetime) -> Price | None:
    """The first of ``prices`` (newest first) in effect at ``at``; None before the oldest."""
    for price in prices:
        if price.effective_from <= at:
            return price
    return None


def price_of(row: PricingRow) -> Price:
    """A pricing row with its empty columns resolved (cache reads and writes: the input price;
    one-hour writes: the cache-write price)."""
    input_price = row.input_per_mtok
    write = row.cache_write_per_mtok if row.cache_write_per_mtok is not None else input_price
    write_1h = row.cache_write_1h_per_mtok
    cached = row.cached_input_per_mtok
    return Price(
        id=row.id,
        input_per_mtok=input_price,
        output_per_mtok=row.output_per_mtok,
        cached_input_per_mtok=cached if cached is not None else input_price,
        cache_write_per_mtok=write,
        cache_write_1h_per_mtok=write_1h if write_1h is not None else write,
        effective_from=row.effective_from,
    )
