"""Turns usage events into rows: ``UsageRecord`` and ``LatencySample``. Idempotent.

``(request_id, created_at)`` is unique on usage records and ``(request_id, attempt,
created_at)`` on samples (the partition key must be part of a unique key on Postgres;
``created_at`` comes from the event, so a replay has the same key), and inserts ignore
conflicts, so a redelivered or replayed event changes nothing. The records an insert
really inserted (``RETURNING``) are added to their hourly rollups in the same
transaction (usage/rollups.py): a replay adds nothing there either.

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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from routing.models import LatencySample
from usage.models import UsageRecord
from usage.rollups import rollup_add

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


_INSERT_FIELDS = [f for f in UsageRecord._meta.concrete_fields if f.name != "id"]
_INSERT_COLUMNS = [f.column for f in _INSERT_FIELDS if f.column is not None]  # every concrete field has one


def _sqlite_datetime(value: str) -> datetime:
    """A timestamp SQLite answers as text (stored in UTC), as Django's SQLite backend reads it."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(f"bad timestamp {value!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def insert_new_records(records: list[UsageRecord]) -> list[UsageRecord]:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the records that were not there yet."""
    if not records:
        return []
    table = UsageRecord._meta.db_table
    columns = ", ".join(connection.ops.quote_name(column) for column in _INSERT_COLUMNS)
    row_sql = "(" + ", ".join(["%s"] * len(_INSERT_FIELDS)) + ")"
    step = 500 if connection.vendor == "sqlite" else 1000  # SQLite: bound parameters per statement
    inserted: dict[tuple[str, datetime], int] = {}
    for record in records:
        record.created_at = _when(record.created_at)
    postgres = connection.vendor == "postgresql"
    if postgres:  # one array per column: a short statement whatever the batch size (no placeholder per value)
        arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in _INSERT_FIELDS)
        unnest_sql = (
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING id, request_id, created_at"
        )
    with connection.cursor() as cursor:
        for at in range(0, len(records), step):
            chunk = records[at : at + step]
            if postgres:
                cursor.execute(
                    unnest_sql,
                    [[f.get_db_prep_save(getattr(r, f.attname), connection) for r in chunk] for f in _INSERT_FIELDS],
                )
            else:
                params: list[Any] = []
                for record in chunk:
                    params.extend(f.get_db_prep_save(getattr(record, f.attname), connection) for f in _INSERT_FIELDS)
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {', '.join([row_sql] * len(chunk))} "
                    "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING id, request_id, created_at",
                    params,
                )
            for pk, request_id, created_at in cursor.fetchall():
                if isinstance(created_at, str):  # SQLite answers text
                    created_at = _sqlite_datetime(created_at)
                inserted[(request_id, created_at)] = pk
    new = []
    for record in records:
        pk = inserted.pop((record.request_id, record.created_at), None)  # pop: a batch's duplicate adds once
        if pk is not None:
            record.id = pk
            new.append(record)
    return new


def records_insert(records: list[UsageRecord]) -> list[UsageRecord]:
    """Insert usage records (those not there yet) and add them to their hourly rollups, atomically.

    The one way records are written: the consumer, the embedded writer, imports and tests.
    """
    with transaction.atomic():
        inserted = insert_new_records(records)
        rollup_add(inserted)
    return inserted


def ingest_events(events: Iterable[dict[str, Any]]) -> set[tuple[str, datetime]]:
    """Insert the rows of ``events``; return the (deployment, minute) buckets they touch."""
    records: list[UsageRecord] = []
    samples: list[LatencySample] = []
    for event in events:
        records.append(_record(event["record"]))
        samples.extend(_sample(s) for s in event.get("samples") or [])
    with transaction.atomic():
        records_insert(records)
        if samples:
            LatencySample.objects.bulk_create(samples, ignore_conflicts=True, batch_size=1000)
    return {(s.deployment, s.created_at.replace(second=0, microsecond=0)) for s in samples}
