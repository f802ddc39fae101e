"""Turns usage events into rows: ``UsageRecord`` and ``LatencySample``. Idempotent.

``request_id`` is unique on usage records and ``(request_id, attempt)`` on samples, and
inserts ignore conflicts, so a redelivered or replayed event changes nothing.

An event that cannot be a row (a negative token count or cost, a count past the column,
a missing field, a field the row does not have) raises ``ValueError``/``KeyError``/``TypeError``:
the consumer then isolates it and, after a few tries, moves it to the dead letters
(usage/deadletters.py). An unknown field is never dropped in silence: the request path
builds events from ``usage.events.UsageRecordData``/``LatencySampleData``, whose fields are
the rows' columns, so one here means a producer and a consumer that disagree (replay the
dead letters once both run the same code).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils.dateparse import parse_datetime

from routing.models import LatencySample
from usage.models import UsageRecord

_RECORD_FIELDS = {f.attname for f in UsageRecord._meta.concrete_fields} - {"id"}
_SAMPLE_FIELDS = {f.attname for f in LatencySample._meta.concrete_fields} - {"id"}
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens")
_MAX_BIGINT = 2**63 - 1


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"bad timestamp {value!r}")
    return parsed


def _known(data: dict[str, Any], fields: set[str], what: str) -> dict[str, Any]:
    unknown = data.keys() - fields
    if unknown:
        raise ValueError(f"{what} has fields the row does not: {', '.join(sorted(unknown))}")
    return dict(data)


def _record(data: dict[str, Any]) -> UsageRecord:
    values = _known(data, _RECORD_FIELDS, "usage record")
    client_key_id = values.pop("client_key_id", None)
    values["created_at"] = _when(values["created_at"])
    for name in _TOKEN_FIELDS:
        count = values.get(name, 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_BIGINT:
            raise ValueError(f"{name} is {count!r}: not a token count")
    if values.get("cost_usd") is not None:
        cost = Decimal(str(values["cost_usd"]))
        if not cost.is_finite() or cost < 0:
            raise ValueError(f"cost_usd is {cost}: a cost is never negative")
        values["cost_usd"] = cost
    if values.get("hedge_cost_usd") is not None:
        hedge_cost = Decimal(str(values["hedge_cost_usd"]))
        if not hedge_cost.is_finite() or hedge_cost < 0:
            raise ValueError(f"hedge_cost_usd is {hedge_cost}: a cost is never negative")
        values["hedge_cost_usd"] = hedge_cost
    return UsageRecord(client_key_id=client_key_id, **values)


def _sample(data: dict[str, Any]) -> LatencySample:
    values = _known(data, _SAMPLE_FIELDS, "latency sample")
    values["created_at"] = _when(values["created_at"])
    return LatencySample(**values)


def ingest_events(events: Iterable[dict[str, Any]]) -> set[tuple[str, datetime]]:
    """Insert the rows of ``events``; return the (deployment, minute) buckets they touch."""
    records: list[UsageRecord] = []
    samples: list[LatencySample] = []
    for event in events:
        records.append(_record(event["record"]))
        samples.extend(_sample(s) for s in event.get("samples") or [])
    with transaction.atomic():
        if records:
            UsageRecord.objects.bulk_create(records, ignore_conflicts=True, batch_size=1000)
        if samples:
            LatencySample.objects.bulk_create(samples, ignore_conflicts=True, batch_size=1000)
    return {(s.deployment, s.created_at.replace(second=0, microsecond=0)) for s in samples}
