"""Time partitions of the high-volume tables on Postgres: usage records and latency samples.

Both tables are declaratively partitioned by range on ``created_at`` (migration
``usage/0007_scale_partitions``): usage records by month, raw latency samples by day.
Each also has a ``_default`` partition so that a row outside every partition (a clock far
off, a replay of something very old) is stored rather than refused.

- ``partitions_ensure`` creates the partitions of the coming periods ahead of time
  (``GATEWAY_USAGE_PARTITIONS_AHEAD_MONTHS``, ``GATEWAY_SAMPLE_PARTITIONS_AHEAD_DAYS``).
  A partition is created beside the table, filled with the rows the default partition
  holds for its range, and attached, in one transaction: so creating a partition for
  a range the default already has rows of works too.
- ``partitions_retire`` drops whole partitions past their table's retention: raw
  samples after ``GATEWAY_LATENCY_SAMPLE_RETENTION_DAYS`` (the latency rollups stay),
  usage records after ``GATEWAY_USAGE_RETENTION_MONTHS`` (0, the default: kept forever;
  the usage rollups stay regardless). Dropping a partition is instant, where deleting
  rows is slow and bloats the table.

The Celery task ``usage.maintain_partitions`` (hourly) runs both. The embedded default
(SQLite) keeps plain tables and deletes expired samples row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from gatewaysite.clock import now


@dataclass(frozen=True)
class PartitionedTable:
    table: str
    period: str  # month or day

    def start_of(self, moment: date) -> date:
        return moment.replace(day=1) if self.period == "month" else moment

    def after(self, start: date) -> date:
        if self.period == "day":
            return start + timedelta(days=1)
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)

    def before(self, start: date) -> date:
        if self.period == "day":
            return start - timedelta(days=1)
        return date(start.year - (start.month == 1), (start.month - 2) % 12 + 1, 1)

    def name(self, start: date) -> str:
        return f"{self.table}_{start:%Y%m}" if self.period == "month" else f"{self.table}_{start:%Y%m%d}"

    def periods(self, first: date, last: date) -> Iterator[date]:
        start = self.start_of(first)
        while start <= last:
            yield start
            start = self.after(start)


USAGE = PartitionedTable("usage_usagerecord", "month")
SAMPLES = PartitionedTable("routing_latencysample", "day")
TABLES = (USAGE, SAMPLES)


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def _midnight(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


def existing_partitions(cursor: Any, table: str) -> set[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        [table],
    )
    return {row[0] for row in cursor.fetchall()}


def create_partition(cursor: Any, spec: PartitionedTable, start: date) -> str:
    """Create (and attach) the partition of the period starting ``start``; moves its rows out of the default."""
    name, end = spec.name(start), spec.after(start)
    low, high = _midnight(start), _midnight(end)
    with transaction.atomic(using=connection.alias):
        cursor.execute(f'CREATE TABLE "{name}" (LIKE "{spec.table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
        cursor.execute(
            f'WITH moved AS (DELETE FROM "{spec.table}_default" WHERE created_at >= %s AND created_at < %s '
            f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
            [low, high],
        )
        # Dates the code made, not input: literals (DDL takes no bound parameters).
        cursor.execute(
            f"ALTER TABLE \"{spec.table}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{low}') TO ('{high}')"
        )
    return name


def partitions_ensure(*, at: datetime | None = None) -> list[str]:
    """Create the missing partitions from the current period to the configured horizon; their names."""
    if not is_partitioned():
        return []
    today = (at or now()).astimezone(UTC).date()
    horizon = {
        USAGE.table: today + timedelta(days=31 * settings.GATEWAY["USAGE_PARTITIONS_AHEAD_MONTHS"]),
        SAMPLES.table: today + timedelta(days=settings.GATEWAY["SAMPLE_PARTITIONS_AHEAD_DAYS"]),
    }
    created: list[str] = []
    with connection.cursor() as cursor:
        for spec in TABLES:
            have = existing_partitions(cursor, spec.table)
            for start in spec.periods(today, horizon[spec.table]):
                if spec.name(start) not in have:
                    created.append(create_partition(cursor, spec, start))
    return created


def partitions_retire(*, at: datetime | None = None) -> list[str]:
    """Drop the partitions wholly past their table's retention; their names."""
    if not is_partitioned():
        return []
    today = (at or now()).astimezone(UTC).date()
    cutoffs: dict[str, date] = {
        SAMPLES.table: today - timedelta(days=settings.GATEWAY["LATENCY_SAMPLE_RETENTION_DAYS"])
    }
    months = settings.GATEWAY["USAGE_RETENTION_MONTHS"]
    if months:
        start = USAGE.start_of(today)
        for _ in range(months):
            start = USAGE.before(start)
        cutoffs[USAGE.table] = start
    dropped: list[str] = []
    with connection.cursor() as cursor:
        for spec in TABLES:
            cutoff = cutoffs.get(spec.table)
            if cutoff is None:
                continue
            for name in sorted(existing_partitions(cursor, spec.table)):
                suffix = name[len(spec.table) + 1 :]
                if not suffix.isdigit():
                    continue  # the default partition
                start = (
                    date(int(suffix[:4]), int(suffix[4:6]), 1)
                    if spec.period == "month"
                    else date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:8]))
                )
                if spec.after(start) <= cutoff:
                    cursor.execute(f'DROP TABLE "{name}"')
                    dropped.append(name)
    return dropped


def partitions_maintain(*, at: datetime | None = None) -> dict[str, list[str]]:
    return {"created": partitions_ensure(at=at), "dropped": partitions_retire(at=at)}


# --- the conversion, run once by the migration -----------------------------------------


def _is_partitioned(cursor: Any, table: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = %s", [table]
    )
    return cursor.fetchone() is not None


def _uniques_and_indexes(cursor: Any, table: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The table's unique constraints and its other indexes (name, definition), to recreate after a rebuild."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
        "WHERE t.relname = %s AND c.contype = 'u'",
        [table],
    )
    uniques = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> ALL(%s)",
        [table, [f"{table}_pkey", *(name for name, _ in uniques)]],
    )
    return uniques, cursor.fetchall()


def convert_to_partitioned(cursor: Any, spec: PartitionedTable) -> None:
    """Rebuild ``spec.table`` as a partitioned table with the same columns, indexes and rows.

    The primary key becomes ``(id, created_at)`` (it must hold the partition key); ``id``
    keeps its own sequence. Partitions are created for every period that has rows, the
    current one, and a default partition.
    """
    table = spec.table
    if _is_partitioned(cursor, table):
        return  # already partitioned (the migration was unapplied and is applied again)
    uniques, indexes = _uniques_and_indexes(cursor, table)
    cursor.execute(f'SELECT min(created_at), max(created_at), coalesce(max(id), 0) FROM "{table}"')
    low, high, max_id = cursor.fetchone()
    cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{table}__plain"')
    # Free the sequence's name: the rows keep their ids, new ids continue from the largest.
    cursor.execute(f'ALTER TABLE "{table}__plain" ALTER COLUMN id DROP IDENTITY IF EXISTS')
    cursor.execute(f'ALTER TABLE "{table}__plain" ALTER COLUMN id DROP DEFAULT')
    cursor.execute(f'DROP SEQUENCE IF EXISTS "{table}_id_seq"')
    cursor.execute(
        f'CREATE TABLE "{table}" (LIKE "{table}__plain" INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
        "PARTITION BY RANGE (created_at)"
    )
    cursor.execute(f'CREATE SEQUENCE "{table}_id_seq" OWNED BY "{table}".id')
    cursor.execute(f'ALTER TABLE "{table}" ALTER COLUMN id SET DEFAULT nextval(\'"{table}_id_seq"\')')
    if max_id:
        cursor.execute(f"SELECT setval('\"{table}_id_seq\"', %s)", [max_id])
    cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
    today = now().astimezone(UTC).date()
    first = min(low.date(), today) if low else today
    last = max(high.date(), today) if high else today
    for start in spec.periods(first, last):
        name, end = spec.name(start), spec.after(start)
        cursor.execute(
            f'CREATE TABLE "{name}" PARTITION OF "{table}" '
            f"FOR VALUES FROM ('{_midnight(start)}') TO ('{_midnight(end)}')"
        )
    cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}__plain"')
    cursor.execute(f'DROP TABLE "{table}__plain"')
    cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" PRIMARY KEY (id, created_at)')
    for name, definition in uniques:
        cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        cursor.execute(definition)


def convert_all(cursor: Any) -> None:
    for spec in TABLES:
        convert_to_partitioned(cursor, spec)


def convert_to_plain(cursor: Any, spec: PartitionedTable) -> None:
    """The reverse of ``convert_to_partitioned``: one plain table with the same rows and indexes."""
    table = spec.table
    if not _is_partitioned(cursor, table):
        return
    uniques, indexes = _uniques_and_indexes(cursor, table)
    cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{table}__parts"')
    cursor.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY NONE')
    cursor.execute(f'CREATE TABLE "{table}" (LIKE "{table}__parts" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}__parts"')
    cursor.execute(f'DROP TABLE "{table}__parts"')
    cursor.execute(f'ALTER SEQUENCE "{table}_id_seq" OWNED BY "{table}".id')
    cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" PRIMARY KEY (id)')
    for name, definition in uniques:
        cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        cursor.execute(definition.replace(" ON ONLY ", " ON "))


def unconvert_all(cursor: Any) -> None:
    for spec in TABLES:
        convert_to_plain(cursor, spec)
