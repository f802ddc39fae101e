"""Writing prices: import a price list (idempotent), load the shipped list.

History is append-only: a price in effect (``effective_from`` in the past) is never
rewritten, because past usage records were priced with it. Changing a price means adding
a row with a later ``effective_from``. Only rows that have not taken effect yet may be
corrected in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import transaction

from gatewaysite.clock import now as clock_now
from providers.pricing.formats import PRICE_FIELDS, PriceEntry, parse_file, parse_json

SEED_FILE = Path(__file__).with_name("seed_prices.json")


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0  # future rows corrected in place
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)  # would rewrite a price already in effect
    skipped: list[str] = field(default_factory=list)  # unusable rows of the file

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def summary(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} refused (price already in effect)")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        return ", ".join(parts)


def _apply(model: Any, entries: Iterable[PriceEntry], at: datetime, result: ImportResult) -> None:
    existing: dict[tuple[str, str], list[Any]] = {}
    for row in model.objects.order_by("vendor", "model", "-effective_from"):
        existing.setdefault((row.vendor, row.model), []).append(row)
    seen: set[tuple[str, str, datetime | None]] = set()
    to_create: list[Any] = []
    for entry in entries:
        marker = (entry.vendor, entry.model, entry.effective_from)
        if marker in seen:
            result.skipped.append(f"{entry.vendor}/{entry.model}: listed twice; the first one was used")
            continue
        seen.add(marker)
        rows = existing.get(entry.key, [])
        if entry.effective_from is None:
            # "This is the price now": a new row only if it differs from the one in effect.
            current = next((r for r in rows if r.effective_from <= at), None)
            if current is not None and entry.same_prices(current):
                result.unchanged += 1
                continue
            effective_from = at
        else:
            effective_from = entry.effective_from
            same = next((r for r in rows if r.effective_from == effective_from), None)
            if same is not None:
                if entry.same_prices(same):
                    result.unchanged += 1
                elif same.effective_from > at:
                    for name in PRICE_FIELDS:
                        setattr(same, name, getattr(entry, name))
                    same.source = entry.source or same.source
                    same.save()
                    result.updated += 1
                else:
                    result.conflicts.append(
                        f"{entry.vendor}/{entry.model} from {effective_from:%Y-%m-%d %H:%M}: a different price is "
                        "already in effect; add a row with a later effective_from instead"
                    )
                continue
        row = model(
            vendor=entry.vendor,
            model=entry.model,
            input_per_mtok=entry.input_per_mtok,
            output_per_mtok=entry.output_per_mtok,
            cached_input_per_mtok=entry.cached_input_per_mtok,
            cache_write_per_mtok=entry.cache_write_per_mtok,
            effective_from=effective_from,
            source=entry.source,
        )
        to_create.append(row)
        existing.setdefault(entry.key, []).append(row)
        existing[entry.key].sort(key=lambda r: r.effective_from, reverse=True)
    if to_create:
        model.objects.bulk_create(to_create, batch_size=1000)
        result.created += len(to_create)


def pricing_import(
    *, entries: Iterable[PriceEntry], skipped: Iterable[str] = (), at: datetime | None = None
) -> ImportResult:
    """Add the prices of ``entries``; re-importing the same list creates nothing."""
    from providers.models import PricingRow
    from routing.config.invalidation import config_changed

    result = ImportResult(skipped=list(skipped))
    with transaction.atomic():
        _apply(PricingRow, entries, at or clock_now(), result)
        if result.changed:
            config_changed()  # bulk_create sends no signals
    return result


def pricing_import_file(*, name: str, content: bytes, at: datetime | None = None) -> ImportResult:
    """Import a ``.json`` (gateway or LiteLLM layout) or ``.csv`` price list."""
    parsed = parse_file(name, content)
    return pricing_import(entries=parsed.entries, skipped=parsed.skipped, at=at)


def seed_entries() -> list[PriceEntry]:
    return parse_json(SEED_FILE.read_bytes()).entries


def pricing_load_seed(*, model: Any = None, at: datetime | None = None) -> ImportResult:
    """Load the shipped price list (the data migration calls this with its historical model)."""
    if model is None:
        return pricing_import(entries=seed_entries(), at=at)
    result = ImportResult()
    _apply(model, seed_entries(), at or clock_now(), result)
    return result
