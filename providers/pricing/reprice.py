"""The explicit, audited re-pricing: the one way to give a price an ``effective_from`` in the past.

``manage.py pricing reprice FILE --reason "..."``: in one transaction it adds the file's
rows (backdating allowed), re-costs every usage record those rows now apply to (by the
row in effect at the record's receipt, from the record's own token counts), and writes a
``PriceRepricing`` audit entry (who, why, which rows, how many records, total before and
after); the same is logged at WARNING. After the commit the key spend and budget counters
in Redis that exist are moved by the difference (missing ones are seeded from the
corrected records when next needed).

Records still on their way (in the Redis usage stream) when it runs keep the cost they
were billed at; running the same command again once they have landed re-costs them (the
rows are already there, so it adds nothing and only re-costs). Which records a row
applies to is decided by the provider's current pricing vendor and the record's provider
model, as the request path prices them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from providers.adapters.base import Usage
from providers.pricing.formats import PriceEntry
from providers.pricing.services import ImportResult, pricing_import

logger = logging.getLogger(__name__)

# Add to a counter only if it exists: a missing one is seeded from the (corrected) records.
_INCR_IF_EXISTS = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end return nil"
)


@dataclass
class RepriceResult:
    imported: ImportResult
    records_recosted: int = 0
    cost_before: Decimal = Decimal(0)
    cost_after: Decimal = Decimal(0)
    audit_id: int | None = None
    dry_run: bool = False
    counter_deltas: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.imported.summary()}; {self.records_recosted} usage record(s) re-costed, "
            f"total {self.cost_before} -> {self.cost_after} USD"
            + (" (dry run: nothing was changed)" if self.dry_run else f" (audit entry {self.audit_id})")
        )


def _recost(rows: list[Any], result: RepriceResult) -> None:
    from accounts.models import Team
    from gatewaysite.redis import SLOT
    from providers.models import PricingRow, Provider
    from routing.config.snapshot import price_of
    from usage.budgets import key_spend_counter, period_id
    from usage.cost import cost_of, to_picodollars
    from usage.models import UsageRecord
    from usage.rollups import hour_of, rollup_rebuild

    since: dict[tuple[str, str], datetime] = {}
    for row in rows:
        key = (row.vendor, row.model)
        since[key] = min(since.get(key, row.effective_from), row.effective_from)
    providers_by_vendor: dict[str, list[str]] = defaultdict(list)
    for provider in Provider.objects.all():
        providers_by_vendor[provider.pricing_vendor].append(provider.name)
    teams = dict(Team.objects.values_list("name", "id"))
    deltas: dict[str, int] = defaultdict(int)
    hours: set[datetime] = set()
    for (vendor, model), start in since.items():
        history = [
            price_of(r) for r in PricingRow.objects.filter(vendor=vendor, model=model).order_by("-effective_from")
        ]
        records = UsageRecord.objects.filter(
            provider__in=providers_by_vendor.get(vendor, []), provider_model=model, created_at__gte=start
        ).order_by("id")
        changed: list[UsageRecord] = []
        for record in records.iterator(chunk_size=2000):
            price = next((p for p in history if p.effective_from <= record.created_at), None)
            usage = Usage(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cached_tokens=record.cached_tokens,
                cache_creation_tokens=record.cache_creation_tokens,
                cache_creation_1h_tokens=record.cache_creation_1h_tokens,
            )
            cost = cost_of(usage, price) if price is not None else None
            price_id = price.id if price is not None else None
            if cost == record.cost_usd and price_id == record.pricing_row_id:
                continue
            before, after = record.cost_usd or Decimal(0), cost or Decimal(0)
            result.cost_before += before
            result.cost_after += after
            delta = to_picodollars(after) - to_picodollars(before)
            if delta and record.client_key_id is not None:
                deltas[key_spend_counter(record.client_key_id)] += delta
                for period in ("day", "month"):
                    pid = period_id(period, record.created_at)
                    deltas[f"{SLOT}:budget:key:{record.client_key_id}:{pid}"] += delta
                    if record.team in teams:
                        deltas[f"{SLOT}:budget:team:{teams[record.team]}:{pid}"] += delta
            record.cost_usd, record.pricing_row_id = cost, price_id
            hours.add(hour_of(record.created_at))
            changed.append(record)
            if len(changed) >= 1000:
                UsageRecord.objects.bulk_update(changed, ["cost_usd", "pricing_row_id"])
                result.records_recosted += len(changed)
                changed = []
        if changed:
            UsageRecord.objects.bulk_update(changed, ["cost_usd", "pricing_row_id"])
            result.records_recosted += len(changed)
    for hour in sorted(hours):  # the hourly rollups of the re-costed records, from the records
        rollup_rebuild(hour, hour + timedelta(hours=1))
    result.counter_deltas = {k: v for k, v in deltas.items() if v}


def _move_counters(deltas: dict[str, int]) -> None:
    from gatewaysite.redis import get_redis

    client = get_redis()
    if client is None:
        from usage.recorder import local_counters

        for name, delta in deltas.items():
            if local_counters.get(name) is not None:
                local_counters.incr(name, delta)
        return
    from gatewaysite.redis import slot_client

    script = client.register_script(_INCR_IF_EXISTS)
    pipe = slot_client(client).pipeline(transaction=False)
    for name, delta in deltas.items():
        script(keys=[name], args=[delta], client=pipe)
    pipe.execute()


def pricing_reprice(
    *,
    entries: Iterable[PriceEntry],
    reason: str,
    actor: str,
    skipped: Iterable[str] = (),
    dry_run: bool = False,
    at: datetime | None = None,
) -> RepriceResult:
    """Add ``entries`` even with a past ``effective_from`` and re-cost the records they apply to."""
    from providers.models import PriceRepricing

    if not reason.strip():
        raise ValueError("a re-pricing needs a reason (it is kept in the audit entry)")
    entries = list(entries)
    with transaction.atomic():
        imported = pricing_import(entries=entries, skipped=skipped, at=at, backdate=True)
        result = RepriceResult(imported=imported, dry_run=dry_run)
        rows = list(imported.rows)
        if not rows:  # a second run: the rows are there, re-cost what they apply to
            from providers.models import PricingRow

            keys = {(e.vendor, e.model, e.effective_from) for e in entries if e.effective_from is not None}
            candidates = PricingRow.objects.filter(model__in={k[1] for k in keys})
            rows = [r for r in candidates if (r.vendor, r.model, r.effective_from) in keys]
        _recost(rows, result)
        if dry_run:
            transaction.set_rollback(True)
        else:
            audit = PriceRepricing.objects.create(
                actor=actor[:150],
                reason=reason,
                rows=[
                    {"id": r.pk, "vendor": r.vendor, "model": r.model, "effective_from": r.effective_from.isoformat()}
                    for r in rows
                ],
                records_recosted=result.records_recosted,
                cost_before_usd=result.cost_before,
                cost_after_usd=result.cost_after,
            )
            result.audit_id = audit.pk
    if not dry_run:
        logger.warning("re-pricing %s by %s (%s): %s", result.audit_id, actor, reason, result.summary())
        if result.counter_deltas:
            _move_counters(result.counter_deltas)
    return result
