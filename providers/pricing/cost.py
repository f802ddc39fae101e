"""Cost arithmetic, exact in Decimal.

Prices are USD per million tokens with at most 6 decimals, so every cost is exact at
12 decimals (``UsageRecord.cost_usd`` keeps 12). Cached reads and cache writes are
billed at their own prices and are *not* billed again as normal input; one-hour cache
writes (a part of the cache writes) have a price of their own.
"""

from __future__ import annotations

from decimal import Decimal

from providers.adapters.base import Usage
from providers.pricing.prices import Price

MILLION = Decimal(1_000_000)
PICO = Decimal("0.000000000001")


def cost_of(usage: Usage, price: Price) -> Decimal:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    creation = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    one_hour = min(usage.cache_creation_1h_tokens, creation)
    plain_input = usage.prompt_tokens - cached - creation
    total = (
        plain_input * price.input_per_mtok
        + cached * price.cached_input_per_mtok
        + (creation - one_hour) * price.cache_write_per_mtok
        + one_hour
        * (price.cache_write_1h_per_mtok if price.cache_write_1h_per_mtok is not None else price.cache_write_per_mtok)
        + usage.completion_tokens * price.output_per_mtok
    ) / MILLION
    return total.quantize(PICO)


def estimate_cost(input_tokens: int, output_tokens: int, price: Price) -> Decimal:
    return cost_of(Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens), price)


def to_picodollars(amount: Decimal) -> int:
    """Integer pico-dollars, for exact counters in Redis."""
    return int((amount / PICO).to_integral_value())


def from_picodollars(value: int) -> Decimal:
    return (Decimal(value) * PICO).quantize(PICO)


def format_usd(amount: Decimal | None) -> str:
    """Plain decimal string without exponent, trailing zeros trimmed (``0.000125``)."""
    if amount is None:
        return "unknown"
    text = format(amount.normalize(), "f")
    return "0" if text == "-0" else text
