"""Writing prices: import a price list (idempotent), load the shipped list, add or edit one row.

History is append-only, and a price takes effect at a known instant that every gateway
process sees coming (``gatewaysite/config/notice.py``):

- "now" means the write time plus the notice ``N`` (``GATEWAY_CONFIG_PROPAGATION_SECONDS``):
  a row without ``effective_from`` gets exactly that;
- a row with an ``effective_from`` earlier than that is refused: before the write time it
  would re-price requests already billed (backdating), and within ``N`` after it some
  process could bill a request before it sees the row. The one way to backdate is the
  explicit, audited re-pricing (``usage/reprice.py``). A gateway that has
  billed nothing yet (no usage record: a new installation, or a configuration restored
  into an empty one) takes rows of any date: there is no history to rewrite;
- a row in effect, or taking effect within ``N``, is frozen; only rows further in the
  future may be corrected in place or deleted.

Every write takes the pricing write lock first and reads the clock after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import transaction

from gatewaysite.clock import now as clock_now
from gatewaysite.config.changes import config_changed
from gatewaysite.config.notice import earliest_effective_from, pricing_write_lock, propagation_seconds
from providers.models import PricingRow
from providers.pricing.formats import PRICE_FIELDS, PriceEntry, parse_file, parse_json

SEED_FILE = Path(__file__).with_name("seed_prices.json")


class PricingTimeError(ValueError):
    """A price would take effect too early (backdated, or before every process can see it)."""


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0  # future rows corrected in place
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)  # would rewrite a price in effect, or backdate one
    skipped: list[str] = field(default_factory=list)  # unusable rows of the file
    effective_from: datetime | None = None  # when rows "from now" take effect
    rows: list[Any] = field(default_factory=list)  # the rows created

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def summary(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} refused")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        text = ", ".join(parts)
        if self.effective_from is not None and self.created:
            text += f"; new prices without a date take effect at {self.effective_from.isoformat()}"
        return text


_billing_checks: list[Callable[[], bool]] = []


def on_billing_check(check: Callable[[], bool]) -> None:
    """Register a check that says whether anything was billed yet. Billing sits above pricing
    (``usage``), so it registers its check when it starts (``usage/apps.py``)."""
    if check not in _billing_checks:
        _billing_checks.append(check)


def nothing_billed() -> bool:
    """Nothing billed yet (no usage record): price rows of any date rewrite no history."""
    return not any(check() for check in _billing_checks)


def too_early_message(what: str, effective_from: datetime, at: datetime) -> str:
    """Why a row effective at ``effective_from``, written at ``at``, is refused."""
    if effective_from < at:
        return (
            f"{what} from {effective_from.isoformat()}: that is in the past, and requests since then were billed "
            "with the price then in effect (history is append-only). Leave effective_from empty to mean now, "
            "or re-price history explicitly with `manage.py pricing reprice`"
        )
    return (
        f"{what} from {effective_from.isoformat()}: too soon; a new price takes effect at least "
        f"{propagation_seconds():g} s after it is written, so that every gateway process sees it first. "
        "Leave effective_from empty to mean now, or choose a later time"
    )


def _apply(model: Any, entries: Iterable[PriceEntry], at: datetime, result: ImportResult, *, backdate: bool) -> None:
    columns = {f.name for f in model._meta.get_fields()}
    price_fields = [name for name in PRICE_FIELDS if name in columns]  # a migration's historical model may lack some
    earliest = earliest_effective_from(at)
    result.effective_from = earliest
    backdate = backdate or nothing_billed()
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
        what = f"{entry.vendor}/{entry.model}"
        if entry.effective_from is None:
            # "This is the price now": a new row only if it differs from the one in effect by then.
            current = next((r for r in rows if r.effective_from <= earliest), None)
            if current is not None and all(getattr(entry, n) == getattr(current, n) for n in price_fields):
                result.unchanged += 1
                continue
            effective_from = earliest
        else:
            effective_from = entry.effective_from
            same = next((r for r in rows if r.effective_from == effective_from), None)
            if same is not None:
                if all(getattr(entry, n) == getattr(same, n) for n in price_fields):
                    result.unchanged += 1
                elif same.effective_from >= earliest:
                    for name in price_fields:
                        setattr(same, name, getattr(entry, name))
                    same.source = entry.source or same.source
                    same.save()
                    result.updated += 1
                else:
                    result.conflicts.append(
                        f"{what} from {effective_from.isoformat()}: a different price is already in effect "
                        "(or takes effect too soon to change); add a row with a later effective_from instead"
                    )
                continue
            if effective_from < earliest and not backdate:
                result.conflicts.append(too_early_message(what, effective_from, at))
                continue
        row = model(
            vendor=entry.vendor,
            model=entry.model,
            **{name: getattr(entry, name) for name in price_fields},
            effective_from=effective_from,
            source=entry.source,
        )
        to_create.append(row)
        existing.setdefault(entry.key, []).append(row)
        existing[entry.key].sort(key=lambda r: r.effective_from, reverse=True)
    if to_create:
        model.objects.bulk_create(to_create, batch_size=1000)
        result.created += len(to_create)
        result.rows.extend(to_create)


def pricing_import(
    *,
    entries: Iterable[PriceEntry],
    skipped: Iterable[str] = (),
    at: datetime | None = None,
    backdate: bool = False,
) -> ImportResult:
    """Add the prices of ``entries``; re-importing the same list creates nothing.

    ``backdate`` lets rows take effect in the past: only the audited re-pricing uses it.
    ``at`` replaces the clock (tests).
    """

    result = ImportResult(skipped=list(skipped))
    with transaction.atomic():
        pricing_write_lock()
        _apply(PricingRow, entries, at or clock_now(), result, backdate=backdate)
        if result.changed:
            config_changed()  # bulk_create sends no signals
    return result


def pricing_import_file(
    *, name: str, content: bytes, at: datetime | None = None, backdate: bool = False
) -> ImportResult:
    """Import a ``.json`` (gateway or LiteLLM layout) or ``.csv`` price list."""
    parsed = parse_file(name, content)
    return pricing_import(entries=parsed.entries, skipped=parsed.skipped, at=at, backdate=backdate)


def seed_entries() -> list[PriceEntry]:
    return parse_json(SEED_FILE.read_bytes()).entries


def pricing_load_seed(*, model: Any = None, at: datetime | None = None) -> ImportResult:
    """Load the shipped price list.

    The data migration calls this with its historical model, on installation: nothing has
    been billed yet, so the shipped rows keep their dates. Called later (no ``model``), it
    is an ordinary import: rows not present yet would be backdated and are refused.
    """
    if model is None:
        return pricing_import(entries=seed_entries(), at=at)
    result = ImportResult()
    _apply(model, seed_entries(), at or clock_now(), result, backdate=True)
    return result


# --- one row at a time (the admin) ------------------------------------------------------


def pricing_row_frozen(row: Any, *, at: datetime | None = None) -> bool:
    """In effect, or taking effect too soon to change: read-only, never deleted."""
    return row is not None and row.pk is not None and row.effective_from < earliest_effective_from(at or clock_now())


def pricing_row_save(*, row: Any, at: datetime | None = None) -> Any:
    """Add a row, or correct a scheduled one. ``effective_from`` None means now (write time plus the notice).

    A time earlier than that is refused (``PricingTimeError``), except within the moment
    between a form's check and this write, where it is moved to the earliest allowed time.
    """

    with transaction.atomic():
        pricing_write_lock()
        moment = at or clock_now()
        earliest = earliest_effective_from(moment)
        if row.pk is not None:
            stored = PricingRow.objects.filter(pk=row.pk).first()
            if stored is not None and pricing_row_frozen(stored, at=moment):
                changed = [
                    n
                    for n in [*PRICE_FIELDS, "vendor", "model", "effective_from"]
                    if getattr(stored, n) != getattr(row, n)
                ]
                if changed:
                    raise PricingTimeError(
                        f"{stored.vendor}/{stored.model} from {stored.effective_from.isoformat()} is in effect (or "
                        "about to be) and requests are billed with it; add a row with a later effective_from instead"
                    )
                row.save(update_fields=["source"])
                return row
        if row.effective_from is None:
            row.effective_from = earliest
        elif not nothing_billed():
            if row.effective_from < moment:
                raise PricingTimeError(too_early_message(f"{row.vendor}/{row.model}", row.effective_from, moment))
            row.effective_from = max(row.effective_from, earliest)
        row.full_clean()
        row.save()
    return row


def pricing_row_delete(*, row: Any, at: datetime | None = None) -> None:
    """Delete a scheduled row; a row in effect (or about to be) is history and stays."""
    with transaction.atomic():
        pricing_write_lock()
        if pricing_row_frozen(row, at=at):
            raise PricingTimeError(
                f"{row.vendor}/{row.model} from {row.effective_from.isoformat()} is in effect (or about to be); "
                "it cannot be deleted"
            )
        row.delete()
