"""Finance reports over usage records: grouped totals and row-level exports.

Totals are summed by Postgres over the exact ``numeric`` column, so a report's total is
the sum of its rows and of the underlying records to the last pico-dollar. Records whose
cost is unknown (no price) count in ``requests`` and ``unpriced_requests`` but add
nothing to ``cost_usd``; a group none of whose records has a known cost has
``cost_usd`` null (an empty cell in CSV): unknown, never zero.

CSV is pure data by default (a header, then one line per group or record), so a
spreadsheet or ``pandas.read_csv(...).cost_usd.sum()`` totals it right and id columns
stay integers; ``totals=1`` appends a ``TOTAL`` line for people reading the file by eye.
JSON always carries ``total``. The row-level export streams over a server-side cursor, so
a million records export in bounded memory.

Grouped reports and totals read the hourly rollups (``UsageRollup``, usage/rollups.py)
for the whole hours of the range and the raw records only for the parts of an hour at
either end (a range on whole hours or days reads no raw record at all), so their cost
grows with hours x groups, not with records. The rollups are exact, so the answer is the
same to the last decimal as summing the records (docs/scaling.md).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Trunc, TruncDate
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers

from gatewaysite.api.errors import InvalidRequest
from providers.pricing.cost import format_usd
from usage.models import UsageRecord, UsageRollup
from usage.rollups import hour_of

GROUPS: dict[str, list[str]] = {
    "day": ["day"],
    "key": ["client_key_id", "key_name", "key_prefix"],
    "team": ["team"],
    "provider": ["provider"],
    "model": ["model"],
    "endpoint": ["endpoint"],
}
FORMATS = ("json", "csv")
TOKEN_METRICS = [
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
]
METRICS = ["requests", "unpriced_requests", *TOKEN_METRICS, "cost_usd"]
DETAIL_FIELDS = [
    "request_id",
    "created_at",
    "client_key_id",
    "key_name",
    "key_prefix",
    "team",
    "provider",
    "deployment",
    "model",
    "provider_model",
    "status",
    "endpoint",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "usage_estimated",
    "cost_usd",
    "pricing_row_id",
]
CHUNK_SIZE = 2000


@dataclass(frozen=True)
class ReportParams:
    start: datetime
    end: datetime  # exclusive
    group_by: tuple[str, ...]
    format: str
    detail: bool
    totals: bool = False  # CSV: append a TOTAL line (JSON always has ``total``)

    @property
    def row_level(self) -> bool:
        return self.detail or not self.group_by


def _moment(value: str, name: str) -> datetime:
    text = value.strip()
    parsed = parse_datetime(text.replace(" ", "+")) if "T" in text else None
    if parsed is None:
        try:
            day = parse_date(text)
        except ValueError:
            day = None
        if day is None:
            raise serializers.ValidationError(
                f"'{name}' must be an ISO date (2026-11-01) or datetime (2026-11-01T00:00:00Z)."
            )
        parsed = datetime.combine(day, time.min)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _Moment(serializers.Field):
    """An ISO date or date-time (a date: midnight UTC; no offset: UTC)."""

    def to_internal_value(self, data: Any) -> datetime:
        return _moment(str(data), self.field_name or "value")


class _Flag(serializers.Field):
    """1/true/yes or 0/false/no (empty: no)."""

    def to_internal_value(self, data: Any) -> bool:
        value = str(data).strip().lower()
        if value in ("", "0", "false", "no"):
            return False
        if value in ("1", "true", "yes"):
            return True
        raise serializers.ValidationError(f"'{self.field_name}' must be 1 or 0 (true or false).")


class ReportParamsSerializer(serializers.Serializer):
    """The cost report's query parameters (``/v1/reports/costs`` and the admin's report form)."""

    start = _Moment()  # required: checked first, with one message for both
    end = _Moment()  # exclusive
    group_by = serializers.CharField(required=False, allow_blank=True, default="")
    format = serializers.CharField(required=False, allow_blank=True, default="json")
    detail = _Flag(required=False, default=False)
    totals = _Flag(required=False, default=False)

    def to_internal_value(self, data: Any) -> Any:
        missing = [name for name in ("start", "end") if not data.get(name)]
        if missing:
            raise serializers.ValidationError(
                {missing[0]: [f"Missing parameter(s): {', '.join(missing)} (ISO dates; end is exclusive)."]}
            )
        return super().to_internal_value(data)

    def validate_group_by(self, value: str) -> tuple[str, ...]:
        groups: list[str] = []
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in GROUPS:
                raise serializers.ValidationError(
                    f"Unknown group_by {name!r}; use one or more of: {', '.join(GROUPS)} (comma-separated)."
                )
            if name not in groups:
                groups.append(name)
        return tuple(groups)

    def validate_format(self, value: str) -> str:
        fmt = (value or "json").strip().lower()
        if fmt not in FORMATS:
            raise serializers.ValidationError("'format' must be 'json' or 'csv'.")
        return fmt

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": ["'end' must be after 'start' (end is exclusive)."]})
        return attrs


def parse_report_params(query: Mapping[str, str]) -> ReportParams:
    """Validate ``start``, ``end`` (exclusive), ``group_by``, ``format``, ``detail``; 400 on bad input."""
    checked = ReportParamsSerializer(data={name: query[name] for name in query})
    if not checked.is_valid():
        param, messages = next(iter(checked.errors.items()))
        raise InvalidRequest(str(messages[0]), param=param)
    return ReportParams(**checked.validated_data)


def records_between(start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)


def _metrics() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        "unpriced_requests": Count("id", filter=Q(cost_usd__isnull=True)),
        **{name: Sum(name) for name in TOKEN_METRICS},
        "cost_usd": Sum("cost_usd"),
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("requests", "unpriced_requests", *TOKEN_METRICS):
        out[name] = int(out.get(name) or 0)
    # SUM over no known cost is NULL: unknown when the group had requests, zero when it had none.
    cost = out.get("cost_usd")
    out["cost_usd"] = cost if cost is not None else (None if out["requests"] else Decimal(0))
    if out.get("day") is not None:
        out["day"] = out["day"].isoformat()
    return out


def report_total(records: QuerySet[UsageRecord]) -> dict[str, Any]:
    return _clean(records.aggregate(**_metrics()))


def _rollup_metrics() -> dict[str, Any]:
    return {name: Sum(name) for name in ("requests", "unpriced_requests", *TOKEN_METRICS, "cost_usd")}


def _whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole hours inside ``[start, end)``: ``[first, last)``, empty when first >= last."""
    first = hour_of(start)
    if first < start:
        first += timedelta(hours=1)
    return first, max(first, hour_of(end))


def _parts(start: datetime, end: datetime) -> tuple[list[tuple[datetime, datetime]], tuple[datetime, datetime]]:
    """(raw ranges at the ends, rollup range of whole hours)."""
    first, last = _whole_hours(start, end)
    if first >= last:
        return [(start, end)], (first, first)
    raw = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return raw, (first, last)


def _rollup_rows(first: datetime, last: datetime, fields: list[str], day: bool) -> list[dict[str, Any]]:
    if first >= last:
        return []
    cells = UsageRollup.objects.filter(hour__gte=first, hour__lt=last)
    if day:
        cells = cells.annotate(day=Trunc("hour", "day", tzinfo=UTC))
    if not fields:
        total = cells.aggregate(**_rollup_metrics())
        return [total] if total["requests"] else []
    return list(cells.values(*fields).annotate(**_rollup_metrics()).order_by())


def _raw_rows(start: datetime, end: datetime, fields: list[str], day: bool) -> list[dict[str, Any]]:
    records = records_between(start, end)
    if day:
        records = records.annotate(day=TruncDate("created_at", tzinfo=UTC))
    if not fields:
        total = records.aggregate(**_metrics())
        return [{**total, "cost_usd": total["cost_usd"] or Decimal(0)}] if total["requests"] else []
    rows = []
    for row in records.values(*fields).annotate(**_metrics()).order_by():
        rows.append({**row, "cost_usd": row["cost_usd"] or Decimal(0)})
    return rows


def _group_value(name: str, value: Any) -> Any:
    if name == "client_key_id":
        return value or None  # rollups say 0 for "no key"
    if name == "day" and isinstance(value, datetime):
        return value.date()
    return value


def _merged(start: datetime, end: datetime, fields: list[str], day: bool) -> list[dict[str, Any]]:
    raw_ranges, (first, last) = _parts(start, end)
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    sources = [_rollup_rows(first, last, fields, day)] + [_raw_rows(a, b, fields, day) for a, b in raw_ranges]
    for rows in sources:
        for row in rows:
            group = tuple(_group_value(f, row[f]) for f in fields)
            into = sums.get(group)
            if into is None:
                into = sums[group] = {"requests": 0, "unpriced_requests": 0, "cost_usd": Decimal(0)}
                into.update(dict.fromkeys(TOKEN_METRICS, 0))
            for name in ("requests", "unpriced_requests", *TOKEN_METRICS):
                into[name] += int(row[name] or 0)
            into["cost_usd"] += row["cost_usd"] or Decimal(0)
    out = []
    for group in sorted(sums, key=lambda g: tuple((v is None, "" if v is None else v) for v in g)):
        metrics = sums[group]
        if metrics["requests"] and metrics["requests"] == metrics["unpriced_requests"]:
            metrics["cost_usd"] = None  # no record of the group has a known cost: unknown, not zero
        row = dict(zip(fields, group, strict=True)) | metrics
        out.append(_clean(row))
    return out


def range_total(start: datetime, end: datetime) -> dict[str, Any]:
    """The totals of ``[start, end)`` from rollups and the raw records of partial hours."""
    rows = _merged(start, end, [], False)
    return rows[0] if rows else _clean({"requests": 0})


def cost_report(params: ReportParams, records: QuerySet[UsageRecord] | None = None) -> dict[str, Any]:
    """Grouped totals: ``{"rows": [...], "total": {...}}``, from the rollups (or ``records``, summed as given)."""
    fields = [f for g in params.group_by for f in GROUPS[g]]
    day = "day" in params.group_by
    if records is None:
        rows = _merged(params.start, params.end, fields, day)
        total = range_total(params.start, params.end)
    else:
        grouped = records.annotate(day=TruncDate("created_at", tzinfo=UTC)) if day else records
        rows = [_clean(r) for r in grouped.values(*fields).annotate(**_metrics()).order_by(*fields)]
        total = report_total(records)
    return {
        "start": params.start.isoformat(),
        "end": params.end.isoformat(),
        "group_by": list(params.group_by),
        "currency": "USD",
        "rows": rows,
        "total": total,
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_usd(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def report_json(report: dict[str, Any]) -> bytes:
    return orjson.dumps(report, default=_json_value)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_line(writer: Any, values: Iterable[Any]) -> bytes:
    return writer.writerow(["" if v is None else _json_value(v) for v in values]).encode()


def report_csv(report: dict[str, Any], *, totals: bool = False) -> bytes:
    """Header and one line per group; ``totals`` appends a ``TOTAL`` line (then the file no longer sums)."""
    writer = csv.writer(_Echo(), lineterminator="\n")
    fields = [f for g in report["group_by"] for f in GROUPS[g]]
    lines = [_csv_line(writer, [*fields, *METRICS] if fields else ["", *METRICS])]
    for row in report["rows"]:
        lines.append(_csv_line(writer, [*(row.get(f) for f in fields), *(row[m] for m in METRICS)]))
    if totals:
        total = report["total"]
        label = ["TOTAL", *([""] * (len(fields) - 1))] if fields else ["TOTAL"]
        lines.append(_csv_line(writer, [*label, *(total[m] for m in METRICS)]))
    return b"".join(lines)


def detail_rows(records: QuerySet[UsageRecord]) -> Iterator[tuple[Any, ...]]:
    """Row-level records over a server-side cursor (``chunk_size`` rows in memory at a time)."""
    return records.order_by("created_at", "id").values_list(*DETAIL_FIELDS).iterator(chunk_size=CHUNK_SIZE)


_CREATED_AT = DETAIL_FIELDS.index("created_at")
_COST = DETAIL_FIELDS.index("cost_usd")
_EXPORT_BATCH = 1000  # rows per chunk of the streamed response


def _detail_values(row: tuple[Any, ...], *, iso: bool = True) -> list[Any]:
    """A record's export values: the two columns that need it formatted, the others as they are.

    ``created_at`` is never null, ``cost_usd`` is the only ``Decimal`` (``format_usd``; null
    stays null: an empty CSV cell, JSON ``null``); ``csv`` writes ``None`` as an empty cell.
    Converting by position, not by type per value, is what keeps the export fast.
    """
    values = list(row)
    if iso:  # orjson writes a datetime as ``isoformat`` does, natively
        values[_CREATED_AT] = values[_CREATED_AT].isoformat()
    cost = values[_COST]
    if cost is not None:
        values[_COST] = format_usd(cost)
    return values


def _batches(records: QuerySet[UsageRecord], iso: bool) -> Iterator[list[list[Any]]]:
    """The records' export values (``_detail_values``), ``_EXPORT_BATCH`` rows at a time, the last batch shorter."""
    batch: list[list[Any]] = []
    for row in detail_rows(records):
        batch.append(_detail_values(row, iso=iso))
        if len(batch) >= _EXPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def detail_csv(records: QuerySet[UsageRecord], total: dict[str, Any] | None = None) -> Iterator[bytes]:
    """Streamed CSV: a header and one line per record; with ``total``, a TOTAL line (summed by the database).

    Memory stays bounded whatever the range: ``CHUNK_SIZE`` rows from the server-side
    cursor and one chunk of ``_EXPORT_BATCH`` lines at a time.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = csv.writer(_Echo(), lineterminator="\n")
    yield _csv_line(header, DETAIL_FIELDS)
    for batch in _batches(records, iso=True):
        writer.writerows(batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if total is None:
        return
    line: list[Any] = [""] * len(DETAIL_FIELDS)
    line[0] = "TOTAL"
    for name in [*TOKEN_METRICS, "cost_usd"]:
        line[DETAIL_FIELDS.index(name)] = total[name]
    yield _csv_line(header, line)


def detail_json(records: QuerySet[UsageRecord], total: dict[str, Any], params: ReportParams) -> Iterator[bytes]:
    """Streamed JSON: ``{"start", "end", "rows": [...], "total": {...}}``, a chunk of rows serialized at once."""
    head = {"start": params.start.isoformat(), "end": params.end.isoformat(), "group_by": [], "currency": "USD"}
    yield orjson.dumps(head)[:-1] + b',"rows":['
    separator = b""
    for batch in _batches(records, iso=False):
        yield separator + orjson.dumps([dict(zip(DETAIL_FIELDS, values, strict=True)) for values in batch])[1:-1]
        separator = b","
    yield b'],"total":' + orjson.dumps(total, default=_json_value) + b"}"
