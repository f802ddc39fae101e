"""Price lists in and out: the gateway's JSON and CSV, and LiteLLM's price map.

Pure functions over bytes and ``PriceEntry`` values; no database. Prices are USD per
million tokens, parsed as ``Decimal`` from their text (JSON numbers never go through
float), with at most 6 decimals, as ``PricingRow`` stores them.

- Gateway JSON: ``{"format": "llm-gateway-pricing/1", "rows": [{vendor, model,
  input_per_mtok, output_per_mtok, cached_input_per_mtok, cache_write_per_mtok,
  effective_from, source}, ...]}`` (a bare list of rows is accepted too).
- CSV: the same columns, one row per line, a header line first.
- LiteLLM (``model_prices_and_context_window.json``): keys are model names, values hold
  ``input_cost_per_token``, ``output_cost_per_token``, ``cache_read_input_token_cost``,
  ``cache_creation_input_token_cost``, ``cache_creation_input_token_cost_above_1hr``
  (one-hour cache writes) and ``litellm_provider``. Prices per token are
  converted exactly to per million tokens; a price that does not fit 6 decimals per
  million is skipped and reported, never rounded.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, overload

from django.utils.dateparse import parse_date, parse_datetime

FORMAT_TAG = "llm-gateway-pricing/1"
# The prices of a row (PricingRow and PriceEntry alike), USD per million tokens.
PRICE_FIELDS = [
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
]
COLUMNS = ["vendor", "model", *PRICE_FIELDS, "effective_from", "source"]
MILLION = Decimal(1_000_000)
MAX_PLACES = 6
MAX_VALUE = Decimal("9999999999")  # PricingRow: 16 digits, 6 decimals

# LiteLLM's provider names -> the gateway's pricing vendors (Provider.vendor).
LITELLM_VENDORS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "azure_text": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "mistral": "mistral",
    "codestral": "mistral",
    "groq": "groq",
    "together_ai": "together",
    "deepseek": "deepseek",
}
LITELLM_MODES = {"chat", "completion", "responses", None}


class PricingFormatError(ValueError):
    """The file cannot be read as a price list (the message says why and where)."""


@dataclass(frozen=True)
class PriceEntry:
    vendor: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    effective_from: datetime | None = None  # None: from the moment it is imported
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.vendor, self.model)

    def same_prices(self, other: Any) -> bool:
        return all(getattr(self, name) == getattr(other, name, None) for name in PRICE_FIELDS)


@dataclass
class ParsedFile:
    entries: list[PriceEntry]
    skipped: list[str]  # "what: why", rows that were not usable


@overload
def price(value: Any, *, where: str, field: str, required: Literal[True] = True) -> Decimal: ...


@overload
def price(value: Any, *, where: str, field: str, required: bool) -> Decimal | None: ...


def price(value: Any, *, where: str, field: str, required: bool = True) -> Decimal | None:
    """A per-million price from text or a Decimal: non-negative, at most 6 decimals."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise PricingFormatError(f"{where}: {field} is required")
        return None
    if isinstance(value, bool):
        raise PricingFormatError(f"{where}: {field} must be a number")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise PricingFormatError(f"{where}: {field} is not a number: {value!r}")
    if not amount.is_finite() or amount < 0:
        raise PricingFormatError(f"{where}: {field} must be a non-negative number")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise PricingFormatError(f"{where}: {field} has more than {MAX_PLACES} decimals: {value}")
    if amount > MAX_VALUE:
        raise PricingFormatError(f"{where}: {field} is too large")
    return amount


def when(value: Any, *, where: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    else:
        text = str(value).strip()
        parsed = parse_datetime(text)
        if parsed is None:
            day = parse_date(text)
            parsed = datetime(day.year, day.month, day.day) if day else None
    if parsed is None:
        raise PricingFormatError(f"{where}: effective_from is not an ISO date or datetime: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def entry_from_mapping(row: dict[str, Any], *, where: str) -> PriceEntry:
    vendor = str(row.get("vendor") or "").strip()
    model = str(row.get("model") or "").strip()
    if not vendor or not model:
        raise PricingFormatError(f"{where}: vendor and model are required")
    return PriceEntry(
        vendor=vendor,
        model=model,
        input_per_mtok=price(row.get("input_per_mtok"), where=where, field="input_per_mtok"),
        output_per_mtok=price(row.get("output_per_mtok"), where=where, field="output_per_mtok"),
        cached_input_per_mtok=price(
            row.get("cached_input_per_mtok"), where=where, field="cached_input_per_mtok", required=False
        ),
        cache_write_per_mtok=price(
            row.get("cache_write_per_mtok"), where=where, field="cache_write_per_mtok", required=False
        ),
        cache_write_1h_per_mtok=price(
            row.get("cache_write_1h_per_mtok"), where=where, field="cache_write_1h_per_mtok", required=False
        ),
        effective_from=when(row.get("effective_from"), where=where),
        source=str(row.get("source") or "")[:300],
    )


def _per_million(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value)) * MILLION


def _litellm_entry(name: str, spec: dict[str, Any]) -> PriceEntry | str:
    """An entry, or why the model was skipped."""
    if spec.get("mode") not in LITELLM_MODES:
        return f"mode {spec.get('mode')!r} is not a chat model"
    if spec.get("input_cost_per_token") is None or spec.get("output_cost_per_token") is None:
        return "no per-token input and output price"
    provider = str(spec.get("litellm_provider") or "").strip()
    if not provider:
        return "no litellm_provider"
    vendor = LITELLM_VENDORS.get(provider, provider.lower().replace(" ", "-"))
    model = name[len(provider) + 1 :] if name.startswith(provider + "/") else name
    where = name
    try:
        return PriceEntry(
            vendor=vendor[:64],
            model=model,
            input_per_mtok=price(_per_million(spec["input_cost_per_token"]), where=where, field="input"),
            output_per_mtok=price(_per_million(spec["output_cost_per_token"]), where=where, field="output"),
            cached_input_per_mtok=price(
                _per_million(spec.get("cache_read_input_token_cost")), where=where, field="cache read", required=False
            ),
            cache_write_per_mtok=price(
                _per_million(spec.get("cache_creation_input_token_cost")),
                where=where,
                field="cache creation",
                required=False,
            ),
            cache_write_1h_per_mtok=price(
                _per_million(spec.get("cache_creation_input_token_cost_above_1hr")),
                where=where,
                field="one-hour cache creation",
                required=False,
            ),
            source="LiteLLM model_prices_and_context_window.json",
        )
    except InvalidOperation:
        return "a price is not a number"
    except PricingFormatError as exc:
        # the caller puts the model name in front: say it once
        return str(exc).removeprefix(f"{where}: ")


def _is_litellm(data: Any) -> bool:
    if not isinstance(data, dict) or "rows" in data:
        return False
    return any(isinstance(v, dict) and ("input_cost_per_token" in v or "litellm_provider" in v) for v in data.values())


def parse_json(raw: bytes | str) -> ParsedFile:
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PricingFormatError(f"not valid JSON: {exc}")
    if _is_litellm(data):
        entries: list[PriceEntry] = []
        skipped: list[str] = []
        for name, spec in data.items():
            if name == "sample_spec" or not isinstance(spec, dict):
                continue
            result = _litellm_entry(name, spec)
            if isinstance(result, str):
                skipped.append(f"{name}: {result}")
            else:
                entries.append(result)
        return ParsedFile(entries, skipped)
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise PricingFormatError('expected a list of rows, {"rows": [...]}, or a LiteLLM price map')
    entries = []
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise PricingFormatError(f"row {index}: expected an object")
        entries.append(entry_from_mapping(row, where=f"row {index}"))
    return ParsedFile(entries, [])


def parse_csv(raw: bytes | str) -> ParsedFile:
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    reader = csv.DictReader(io.StringIO(text))
    missing = {"vendor", "model", "input_per_mtok", "output_per_mtok"} - set(reader.fieldnames or [])
    if missing:
        raise PricingFormatError(f"CSV header lacks: {', '.join(sorted(missing))} (columns: {', '.join(COLUMNS)})")
    entries = [entry_from_mapping(row, where=f"line {reader.line_num}") for row in reader]
    return ParsedFile(entries, [])


def parse_file(name: str, raw: bytes) -> ParsedFile:
    """Parse by the file name's extension: ``.json`` or ``.csv``."""
    lower = name.lower()
    if lower.endswith(".json"):
        return parse_json(raw)
    if lower.endswith(".csv"):
        return parse_csv(raw)
    raise PricingFormatError(f"{name}: use a .json or .csv file")


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _row(entry: Any) -> dict[str, Any]:
    effective = entry.effective_from
    return {
        "vendor": entry.vendor,
        "model": entry.model,
        "input_per_mtok": _text(entry.input_per_mtok),
        "output_per_mtok": _text(entry.output_per_mtok),
        "cached_input_per_mtok": _text(entry.cached_input_per_mtok) or None,
        "cache_write_per_mtok": _text(entry.cache_write_per_mtok) or None,
        "cache_write_1h_per_mtok": _text(getattr(entry, "cache_write_1h_per_mtok", None)) or None,
        "effective_from": effective.astimezone(UTC).isoformat().replace("+00:00", "Z") if effective else None,
        "source": entry.source or "",
    }


def dump_json(rows: Iterable[Any]) -> bytes:
    """``rows``: PricingRow objects or PriceEntry values."""
    return json.dumps({"format": FORMAT_TAG, "rows": [_row(r) for r in rows]}, indent=1).encode() + b"\n"


def dump_csv(rows: Iterable[Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in _row(row).items()})
    return buffer.getvalue()


def dump_file(name: str, rows: Iterable[Any]) -> bytes:
    lower = name.lower()
    if lower.endswith(".json"):
        return dump_json(rows)
    if lower.endswith(".csv"):
        return dump_csv(rows).encode()
    raise PricingFormatError(f"{name}: use a .json or .csv file")
