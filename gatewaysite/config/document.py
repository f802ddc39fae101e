"""The configuration document's shared machinery: values, entries, reports, upserts.

The gateway's configuration travels as one document (``manage.py gateway_config``,
docs/configuration.md). Each app owns its sections - ``providers/config_sections.py``
(providers, deployments, pricing), ``routing/config_sections.py`` (rules, routing
settings) - and ``routing/services/config_io.py`` puts them together. What they share is
here: the strict value parsers (as DRF fields), the entry serializer that names the
offending entry and field in every error, the report, and the idempotent upsert.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import yaml
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.fields import SkipField, empty
from rest_framework.settings import api_settings

FORMAT_VERSION = 1


class ConfigImportError(ValueError):
    """An entry of the document is invalid; the message names it. Nothing was applied."""


# --- values ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError("must be a string")
    return str(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _optional_boolean(value: Any) -> bool | None:
    return None if value is None else _boolean(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be an integer")
    return value


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a number")
    return float(value)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TypeError("must be a decimal number (write prices as strings, e.g. '2.50')")
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        raise TypeError("must be a decimal number (write prices as strings, e.g. '2.50')") from None
    if not parsed.is_finite():
        raise TypeError("must be a finite decimal number")
    return parsed


def _optional_decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else _decimal(value)


def _moment(value: Any) -> datetime:
    """ISO 8601 date-time (or a date: midnight); without an offset it is UTC."""
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time.min)
    elif isinstance(value, str):
        text = value.strip()
        parsed = parse_datetime(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        if parsed is None and len(text) == 10:
            parsed = parse_datetime(text + "T00:00:00")
    else:
        parsed = None
    if parsed is None:
        raise TypeError("must be an ISO 8601 date-time, e.g. 2024-08-06T00:00:00Z")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("must be a mapping (JSON object)")
    return value


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("must be a list of deployment names")
    return list(value)


class _Strict(serializers.Field):
    """A document value, parsed strictly: YAML's ``yes`` is not a boolean, ``1`` is not a string
    of a price. Absent: left out (the model's default applies). ``None`` is the parser's call."""

    parse: ClassVar[Callable[[Any], Any]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def run_validation(self, data: Any = empty) -> Any:
        if data is empty:
            raise SkipField()
        try:
            return type(self).parse(data)
        except TypeError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: Any) -> Any:
        return value


def _strict(parser: Callable[[Any], Any], name: str) -> type[_Strict]:
    return type(name, (_Strict,), {"parse": staticmethod(parser)})


Text = _strict(_text, "Text")
Boolean = _strict(_boolean, "Boolean")
OptionalBoolean = _strict(_optional_boolean, "OptionalBoolean")
Integer = _strict(_integer, "Integer")
OptionalInteger = _strict(_optional_integer, "OptionalInteger")
Number = _strict(_number, "Number")
Money = _strict(_decimal, "Money")
OptionalMoney = _strict(_optional_decimal, "OptionalMoney")
Moment = _strict(_moment, "Moment")
Mapping = _strict(_mapping, "Mapping")
Names = _strict(_names, "Names")


class DocumentEntry(serializers.Serializer):
    """One entry of a section. Subclasses declare their fields (in export order), which of them
    are required, and ``import_only`` fields that are accepted but never exported."""

    required_fields: ClassVar[tuple[str, ...]] = ()
    import_only: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def exported(cls) -> list[str]:
        return [name for name in cls._declared_fields if name not in cls.import_only]

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise self._entry_error("each entry must be a mapping")
        allowed = list(self.fields)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise self._entry_error(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")
        for name in self.required_fields:
            if data.get(name) in (None, ""):
                raise self._entry_error(f"'{name}' is required")
        return super().to_internal_value(data)

    @staticmethod
    def _entry_error(message: str) -> serializers.ValidationError:
        return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})


def entry_parse(
    section: str, index: int, entry: Any, serializer: type[DocumentEntry], *, key: str
) -> tuple[str, dict[str, Any]]:
    """(label naming the entry, its parsed values); ``ConfigImportError`` naming the first problem."""
    label = entry_label(section, index, entry, key)
    if not isinstance(entry, dict):
        raise ConfigImportError(f"{label}: each entry must be a mapping")
    return label, entry_values(label, entry, serializer)


def entry_values(label: str, entry: dict[str, Any], serializer: type[DocumentEntry]) -> dict[str, Any]:
    """The parsed values of ``entry``; ``ConfigImportError`` starting with ``label`` otherwise."""
    checked = serializer(data=entry)
    if not checked.is_valid():
        errors = checked.errors
        if api_settings.NON_FIELD_ERRORS_KEY in errors:
            raise ConfigImportError(f"{label}: {errors[api_settings.NON_FIELD_ERRORS_KEY][0]}")
        name, messages = next(iter(errors.items()))
        raise ConfigImportError(f"{label}: '{name}' {messages[0]}, got {entry[name]!r}")
    return dict(checked.validated_data)


def entry_label(section: str, index: int, entry: Any, key: str) -> str:
    name = entry.get(key) if isinstance(entry, dict) else None
    return f"{section}[{index}] ({name!r})" if name else f"{section}[{index}]"


def section_items(document: dict[str, Any], name: str) -> list[Any] | None:
    """The entries of a list section; None when the document leaves the section out."""
    if name not in document:
        return None
    items = document[name]
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigImportError(f"'{name}' must be a list")
    return items


def require_unique(label_of: Iterable[tuple[str, Any]], what: str) -> None:
    seen: dict[Any, str] = {}
    for label, value in label_of:
        if value in seen:
            raise ConfigImportError(f"{label}: the same {what} as {seen[value]}")
        seen[value] = label


def model_defaults(model: type[models.Model], names: Iterable[str]) -> dict[str, Any]:
    result = {}
    for name in names:
        model_field = model._meta.get_field(name)
        assert isinstance(model_field, models.Field)  # a column, not a reverse relation
        result[name] = model_field.get_default()
    return result


def model_clean(obj: models.Model, label: str, *, validate_unique: bool = True) -> None:
    try:
        obj.full_clean(validate_unique=validate_unique, validate_constraints=validate_unique)
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        else:
            detail = " ".join(exc.messages)
        raise ConfigImportError(f"{label}: {detail}") from None


# --- export values ----------------------------------------------------------------------------


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def moment_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def compact(entry: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty values (None, "", {}, []): import gives a missing field its default."""
    return {k: v for k, v in entry.items() if v is not None and v != "" and v != {} and v != []}


# --- the report and the upsert ----------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unchanged: int = 0
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def upsert(
        self,
        *,
        model: type[models.Model],
        lookup: dict[str, Any],
        values: dict[str, Any],
        label: str,
        what: str,
        validate_unique: bool = True,
    ) -> tuple[Any, bool]:
        """Create the row, or update only the fields that differ; (row, created)."""
        obj = model._default_manager.filter(**lookup).first()
        if obj is None:
            obj = model(**lookup, **values)
            model_clean(obj, label, validate_unique=validate_unique)
            obj.save()
            self.changes.append(f"created {what}")
            return obj, True
        differing = [name for name, value in values.items() if getattr(obj, name) != value]
        if not differing:
            self.unchanged += 1
            return obj, False
        for name in differing:
            setattr(obj, name, values[name])
        model_clean(obj, label, validate_unique=validate_unique)
        obj.save()
        self.changes.append(f"updated {what}: {', '.join(differing)}")
        return obj, False


# --- the text -----------------------------------------------------------------------------------


def config_document_dump(document: dict[str, Any], *, fmt: str, header: str = "") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
        return header + body
    raise ValueError(f"unknown format {fmt!r}: yaml or json")


def config_document_parse(text: str, *, fmt: str, sections: Iterable[str]) -> dict[str, Any]:
    try:
        if fmt == "json":
            document = json.loads(text)
        elif fmt == "yaml":
            document = yaml.safe_load(text)
        else:
            raise ValueError(f"unknown format {fmt!r}: yaml or json")
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigImportError(f"not valid {fmt.upper()}: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigImportError("the document must be a mapping with the sections " + ", ".join(sections))
    return document


def format_for_path(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    if lowered.endswith(".json"):
        return "json"
    raise ValueError(f"{path}: use a .yaml, .yml or .json file name (or --format)")
