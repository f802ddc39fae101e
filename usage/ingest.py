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

On Postgres a batch of events is one statement (``_batch_sql``): Python checks what it
refused before (fields, token counts, costs) on the decoded events and hands the batch
to Postgres as JSON, which fills the rows (``json_populate_recordset``, the model's
defaults for missing fields), inserts records and samples and adds the inserted records
to their rollup cells. Building a model and adapting each value in Python had cost
about four times what the statement costs (docs/scaling.md, "What was measured"). A value
only Postgres refuses (a malformed timestamp, a number past its column) fails the batch
like any insert error: the consumer isolates it entry by entry. SQLite (the embedded
default) keeps the model path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from usage.models import LatencySample, UsageRecord
from usage.rollups import DIMENSIONS, METRICS, TOKENS, rollup_add
from usage.rollups import TABLE as ROLLUP_TABLE

_RECORD_FIELDS = {f.attname for f in UsageRecord._meta.concrete_fields} - {"id"}
_SAMPLE_FIELDS = {f.attname for f in LatencySample._meta.concrete_fields} - {"id"}
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens")
_MAX_BIGINT = 2**63 - 1
_COST_FIELDS = ("cost_usd", "hedge_cost_usd")


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"bad timestamp {value!r}")
    return parsed


def _known(data: dict[str, Any], fields: set[str], what: str) -> None:
    unknown = data.keys() - fields
    if unknown:
        raise ValueError(f"{what} has fields the row does not: {', '.join(sorted(unknown))}")


def _record(data: dict[str, Any]) -> UsageRecord:
    _check_record(data)
    values = dict(data)
    client_key_id = values.pop("client_key_id", None)
    values["created_at"] = _when(values["created_at"])
    for name in _COST_FIELDS:
        if values.get(name) is not None:
            values[name] = Decimal(str(values[name]))
    return UsageRecord(client_key_id=client_key_id, **values)


def _sample(data: dict[str, Any]) -> LatencySample:
    _check_sample(data)
    values = dict(data)
    values["created_at"] = _when(values["created_at"])
    return LatencySample(**values)


def _check_record(data: Any) -> None:
    """What a usage record must be to be ingested, checked on the decoded event (no model built).

    Both paths use it: ``_record`` (the model path) and the one-statement batch on Postgres.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a usage record is an object, not {type(data).__name__}")
    _known(data, _RECORD_FIELDS, "usage record")
    data["created_at"]  # noqa: B018 - KeyError: a record without its moment is no record
    for name in _TOKEN_FIELDS:
        count = data.get(name, 0)
        if type(count) is not int or not 0 <= count <= _MAX_BIGINT:  # bool is not a count
            raise ValueError(f"{name} is {count!r}: not a token count")
    for name in _COST_FIELDS:
        value = data.get(name)
        if value is not None:
            cost = Decimal(str(value))
            if not cost.is_finite() or cost < 0:
                raise ValueError(f"{name} is {cost}: a cost is never negative")


def _check_sample(data: Any) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"a latency sample is an object, not {type(data).__name__}")
    _known(data, _SAMPLE_FIELDS, "latency sample")
    data["created_at"]  # noqa: B018


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


def _defaults(model: Any) -> bytes:
    """The row's Django defaults as JSON: the base of ``json_populate_recordset`` (a missing field takes it)."""
    return orjson.dumps({f.attname: f.get_default() for f in model._meta.concrete_fields if f.attname != "id"})


def _batch_sql() -> str:
    """One statement for a whole batch: records, their rollup cells, samples; answers the latency buckets.

    - Records: ``INSERT ... SELECT FROM json_populate_recordset ... ON CONFLICT DO NOTHING
      RETURNING``: Postgres reads the batch's JSON itself (one parameter, no value adapted
      in Python), and a duplicate (redelivery, replay, twice in one batch) inserts nothing.
    - Rollups: the cells are summed from the ``RETURNING`` set, i.e. from the records this
      statement really inserted, and upserted in the order ``rollup_add`` uses (hour, key
      id, then the names by code point: ``COLLATE "C"``), so consumers never deadlock.
    - Samples: the same way, ``ON CONFLICT DO NOTHING``.
    """
    qn = connection.ops.quote_name
    record_columns = ", ".join(qn(c) for c in _INSERT_COLUMNS)
    sample_columns = ", ".join(qn(f.attname) for f in _SAMPLE_INSERT_FIELDS)  # attname is the column (asserted)
    record_table, sample_table = UsageRecord._meta.db_table, LatencySample._meta.db_table
    dims = [d for d in DIMENSIONS if d != "hour"]
    cell_columns = ", ".join((*DIMENSIONS, *METRICS))
    grouped = ", ".join(
        [
            "date_trunc('hour', created_at, 'UTC') AS hour",
            "coalesce(client_key_id, 0) AS client_key_id",
            *dims[1:],
            "count(*) AS requests",
            "count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_requests",
            *(f"sum({t}) AS {t}" for t in TOKENS),
            "coalesce(sum(cost_usd), 0) AS cost_usd",
        ]
    )
    order = ", ".join(["hour", "client_key_id", *(f'{d} COLLATE "C"' for d in dims[1:])])
    add = ", ".join(f"{m} = {ROLLUP_TABLE}.{m} + excluded.{m}" for m in METRICS)
    return f"""
        WITH inserted AS (
            INSERT INTO {record_table} ({record_columns})
            SELECT {record_columns}
            FROM json_populate_recordset(json_populate_record(NULL::{record_table}, %s::json), %s::json)
            ON CONFLICT (request_id, created_at) DO NOTHING
            RETURNING created_at, {", ".join(dims)}, cost_usd, {", ".join(TOKENS)}
        ), cells AS (
            INSERT INTO {ROLLUP_TABLE} ({cell_columns})
            SELECT {cell_columns} FROM (
                SELECT {grouped} FROM inserted GROUP BY {", ".join(str(n) for n in range(1, len(DIMENSIONS) + 1))}
            ) AS summed
            ORDER BY {order}
            ON CONFLICT ({", ".join(DIMENSIONS)}) DO UPDATE SET {add}
        ), samples AS MATERIALIZED (
            SELECT {sample_columns}
            FROM json_populate_recordset(json_populate_record(NULL::{sample_table}, %s::json), %s::json)
        ), stored AS (
            INSERT INTO {sample_table} ({sample_columns}) SELECT {sample_columns} FROM samples
            ON CONFLICT (request_id, attempt, created_at) DO NOTHING
        )
        SELECT DISTINCT deployment, date_trunc('minute', created_at, 'UTC') FROM samples
    """


_SAMPLE_INSERT_FIELDS = [f for f in LatencySample._meta.concrete_fields if f.name != "id"]
# json_populate_recordset matches the event's keys (attribute names) to column names.
assert all(f.attname == f.column for f in [*_INSERT_FIELDS, *_SAMPLE_INSERT_FIELDS])
_RECORD_DEFAULTS = _defaults(UsageRecord)
_SAMPLE_DEFAULTS = _defaults(LatencySample)
_BATCH_SQL: dict[str, str] = {}  # per database alias: quoting is the connection's


def _dumps_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not an event value")


def _ingest_postgres(events: Iterable[dict[str, Any]]) -> set[tuple[str, datetime]]:
    records: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for event in events:
        record = event["record"]
        _check_record(record)
        records.append(record)
        for sample in event.get("samples") or ():
            _check_sample(sample)
            samples.append(sample)
    sql = _BATCH_SQL.get(connection.alias)
    if sql is None:
        sql = _BATCH_SQL[connection.alias] = _batch_sql()
    params = [
        _RECORD_DEFAULTS.decode(),
        orjson.dumps(records, default=_dumps_default).decode(),
        _SAMPLE_DEFAULTS.decode(),
        orjson.dumps(samples, default=_dumps_default).decode(),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {(deployment, minute) for deployment, minute in cursor.fetchall()}


def ingest_events(events: Iterable[dict[str, Any]]) -> set[tuple[str, datetime]]:
    """Insert the rows of ``events``; return the (deployment, minute) buckets they touch."""
    if connection.vendor == "postgresql":
        return _ingest_postgres(events)
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
