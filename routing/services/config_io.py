"""The gateway configuration as one document: export it, import it (YAML or JSON).

The document holds providers, deployments, pricing rows, routing rules (with their
ordered targets) and the routing settings; never client keys, never a stored provider
key (providers name an environment variable instead). Import matches entries by natural
key (provider name, deployment name, pricing (vendor, model, effective_from), rule name),
writes only what differs, and runs in one transaction: an invalid entry raises
``ConfigImportError`` naming it and nothing is applied. Importing the same document twice
changes nothing. The format is documented in docs/configuration.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.dateparse import parse_datetime

from accounts.keys import KEY_MARK
from accounts.models import ClientKey, Team
from gatewaysite.clock import now
from providers.models import Deployment, PricingRow, Provider
from providers.pricing.services import nothing_billed, too_early_message
from routing.config.invalidation import config_changed
from routing.config.notice import earliest_effective_from, pricing_write_lock
from routing.models import RoutingRule, RoutingSettings, RuleTarget

FORMAT_VERSION = 1
SECTIONS = ("routing", "providers", "deployments", "pricing", "rules")
YAML_HEADER = (
    "# LLM gateway configuration: python manage.py gateway_config import FILE\n"
    "# Format: docs/configuration.md. Client keys are not part of it; provider keys are given\n"
    "# as environment variable names (api_key_env), never written here.\n"
)


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


Parser = Callable[[Any], Any]

PROVIDER_FIELDS: dict[str, Parser] = {
    "name": _text,
    "kind": _text,
    "vendor": _text,
    "base_url": _text,
    "api_key_env": _text,
    "options": _mapping,
    "connect_timeout": _number,
    "read_timeout": _number,
    "response_timeout": _number,
    "first_chunk_timeout": _number,
    "stream_idle_timeout": _number,
    "enabled": _boolean,
}
# Import-only: a literal key (discouraged; prefer api_key_env). Export-only: whether one is stored.
PROVIDER_EXTRA: dict[str, Parser] = {"api_key": _text, "api_key_stored": _boolean}

DEPLOYMENT_FIELDS: dict[str, Parser] = {
    "name": _text,
    "model_name": _text,
    "provider": _text,
    "provider_model": _text,
    "endpoint": _text,
    "weight": _integer,
    "priority": _integer,
    "enabled": _boolean,
    "context_window": _optional_integer,
    "max_output_tokens": _optional_integer,
    "rpm_limit": _optional_integer,
    "tpm_limit": _optional_integer,
}

PRICING_FIELDS: dict[str, Parser] = {
    "vendor": _text,
    "model": _text,
    "input_per_mtok": _decimal,
    "output_per_mtok": _decimal,
    "cached_input_per_mtok": _optional_decimal,
    "cache_write_per_mtok": _optional_decimal,
    "cache_write_1h_per_mtok": _optional_decimal,
    "effective_from": _moment,
    "source": _text,
}

RULE_FIELDS: dict[str, Parser] = {
    "name": _text,
    "priority": _integer,
    "enabled": _boolean,
    "description": _text,
    "model_pattern": _text,
    "client_key": _text,
    "team": _text,
    "header_name": _text,
    "header_value": _text,
    "metadata_key": _text,
    "metadata_value": _text,
    "stream": _optional_boolean,
    "min_input_tokens": _optional_integer,
    "max_input_tokens": _optional_integer,
    "action": _text,
    "strategy": _text,
    "targets": _names,
    "latency_slo_ms": _optional_integer,
    "hedge": _optional_boolean,
    "hedge_delay_ms": _optional_integer,
}

ROUTING_FIELDS: dict[str, Parser] = {
    "strategy": _text,
    "allow_request_strategy": _boolean,
    "max_attempts": _integer,
    "cooldown_failures": _integer,
    "cooldown_seconds": _number,
    "latency_slo_ms": _optional_integer,
    "allow_request_latency_slo": _boolean,
    "slo_min_samples": _integer,
    "slo_explore_percent": _number,
    "hedge_enabled": _boolean,
    "hedge_delay_ms": _optional_integer,
    "hedge_budget_percent": _number,
    "outlier_enabled": _boolean,
    "outlier_interval_seconds": _number,
    "outlier_consecutive_5xx": _integer,
    "outlier_base_ejection_seconds": _number,
    "outlier_max_ejection_seconds": _number,
    "outlier_max_ejection_percent": _integer,
    "outlier_success_rate_stdev_factor": _number,
    "outlier_failure_percentage_threshold": _integer,
    "outlier_latency_factor": _number,
    "outlier_minimum_hosts": _integer,
    "outlier_request_volume": _integer,
}

PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
)

REQUIRED = {
    "providers": ("name", "kind"),
    "deployments": ("name", "model_name", "provider", "provider_model"),
    "pricing": ("vendor", "model", "input_per_mtok", "output_per_mtok", "effective_from"),
    "rules": ("name", "priority"),
}


# --- export -----------------------------------------------------------------------------------


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _moment_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty values (None, "", {}, []): import gives a missing field its default."""
    return {k: v for k, v in entry.items() if v is not None and v != "" and v != {} and v != []}


def gateway_config_export() -> dict[str, Any]:
    """The whole configuration as plain data (str, int, float, bool, list, dict)."""
    settings = RoutingSettings.objects.filter(pk=1).first() or RoutingSettings(pk=1)
    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "routing": {name: getattr(settings, name) for name in ROUTING_FIELDS},
        "providers": [],
        "deployments": [],
        "pricing": [],
        "rules": [],
    }
    for provider in Provider.objects.order_by("name"):
        entry = _compact({name: getattr(provider, name) for name in PROVIDER_FIELDS})
        if provider.api_key:
            entry["api_key_stored"] = True  # the key itself is never exported
        document["providers"].append(entry)
    for dep in Deployment.objects.select_related("provider").order_by("name"):
        entry = {name: getattr(dep, name) for name in DEPLOYMENT_FIELDS if name != "provider"}
        entry["provider"] = dep.provider.name
        document["deployments"].append(_compact({name: entry[name] for name in DEPLOYMENT_FIELDS}))
    for row in PricingRow.objects.order_by("vendor", "model", "effective_from"):
        entry = {}
        for name in PRICING_FIELDS:
            value = getattr(row, name)
            if isinstance(value, Decimal):
                value = _decimal_text(value)
            elif isinstance(value, datetime):
                value = _moment_text(value)
            entry[name] = value
        document["pricing"].append(_compact(entry))
    targets: dict[int, list[str]] = {}
    for target in RuleTarget.objects.select_related("deployment").order_by("rule_id", "position", "id"):
        targets.setdefault(target.rule_id, []).append(target.deployment.name)
    for rule in RoutingRule.objects.select_related("client_key", "team").order_by("priority"):
        entry = {name: getattr(rule, name) for name in RULE_FIELDS if name not in ("client_key", "team", "targets")}
        entry["client_key"] = f"{KEY_MARK}{rule.client_key.prefix}" if rule.client_key else None
        entry["team"] = rule.team.name if rule.team else None
        entry["targets"] = targets.get(rule.id, [])
        document["rules"].append(_compact({name: entry[name] for name in RULE_FIELDS}))
    return document


def config_document_dump(document: dict[str, Any], *, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
        return YAML_HEADER + body
    raise ValueError(f"unknown format {fmt!r}: yaml or json")


def config_document_parse(text: str, *, fmt: str) -> dict[str, Any]:
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
        raise ConfigImportError("the document must be a mapping with the sections " + ", ".join(SECTIONS))
    return document


def format_for_path(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    if lowered.endswith(".json"):
        return "json"
    raise ValueError(f"{path}: use a .yaml, .yml or .json file name (or --format)")


# --- import -----------------------------------------------------------------------------------


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


def _label(section: str, index: int, entry: Any, key: str) -> str:
    name = entry.get(key) if isinstance(entry, dict) else None
    return f"{section}[{index}] ({name!r})" if name else f"{section}[{index}]"


def _parse_entry(
    section: str, index: int, entry: Any, spec: dict[str, Parser], *, key: str, extra: dict[str, Parser] | None = None
) -> tuple[str, dict[str, Any]]:
    label = _label(section, index, entry, key)
    if not isinstance(entry, dict):
        raise ConfigImportError(f"{label}: each entry must be a mapping")
    allowed = {**spec, **(extra or {})}
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ConfigImportError(f"{label}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")
    for name in REQUIRED.get(section, ()):
        if entry.get(name) in (None, ""):
            raise ConfigImportError(f"{label}: '{name}' is required")
    values: dict[str, Any] = {}
    for name, value in entry.items():
        try:
            values[name] = allowed[name](value)
        except TypeError as exc:
            raise ConfigImportError(f"{label}: '{name}' {exc}, got {value!r}") from None
    return label, values


def _section(document: dict[str, Any], name: str) -> list[Any] | None:
    if name not in document:
        return None
    items = document[name]
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigImportError(f"'{name}' must be a list")
    return items


def _unique(label_of: Iterable[tuple[str, Any]], what: str) -> None:
    seen: dict[Any, str] = {}
    for label, value in label_of:
        if value in seen:
            raise ConfigImportError(f"{label}: the same {what} as {seen[value]}")
        seen[value] = label


def _defaults(model: type[models.Model], names: Iterable[str]) -> dict[str, Any]:
    result = {}
    for name in names:
        model_field = model._meta.get_field(name)
        assert isinstance(model_field, models.Field)  # a column, not a reverse relation
        result[name] = model_field.get_default()
    return result


def _clean(obj: models.Model, label: str, *, validate_unique: bool = True) -> None:
    try:
        obj.full_clean(validate_unique=validate_unique, validate_constraints=validate_unique)
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        else:
            detail = " ".join(exc.messages)
        raise ConfigImportError(f"{label}: {detail}") from None


class _Importer:
    def __init__(self, report: ImportReport, *, prune: bool) -> None:
        self.report = report
        self.prune = prune

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
        obj = model._default_manager.filter(**lookup).first()
        if obj is None:
            obj = model(**lookup, **values)
            _clean(obj, label, validate_unique=validate_unique)
            obj.save()
            self.report.changes.append(f"created {what}")
            return obj, True
        differing = [name for name, value in values.items() if getattr(obj, name) != value]
        if not differing:
            self.report.unchanged += 1
            return obj, False
        for name in differing:
            setattr(obj, name, values[name])
        _clean(obj, label, validate_unique=validate_unique)
        obj.save()
        self.report.changes.append(f"updated {what}: {', '.join(differing)}")
        return obj, False

    # sections ------------------------------------------------------------------------------

    def providers(self, items: list[Any]) -> set[str]:
        parsed = [
            _parse_entry("providers", i, e, PROVIDER_FIELDS, key="name", extra=PROVIDER_EXTRA)
            for i, e in enumerate(items)
        ]
        _unique(((label, v["name"]) for label, v in parsed), "name")
        fields = [n for n in PROVIDER_FIELDS if n != "name"]
        for label, values in parsed:
            stored_flag = values.pop("api_key_stored", False)
            data = {**_defaults(Provider, fields), **values}
            data.pop("name")
            provider, _ = self.upsert(
                model=Provider,
                lookup={"name": values["name"]},
                values=data,
                label=label,
                what=f"provider {values['name']}",
            )
            if stored_flag and not provider.api_key and not provider.api_key_env:
                self.report.warnings.append(
                    f"provider {provider.name}: the document says a key was stored, but none is here; "
                    "set it in the admin or give api_key_env"
                )
        return {values["name"] for _, values in parsed}

    def deployments(self, items: list[Any]) -> set[str]:
        parsed = [_parse_entry("deployments", i, e, DEPLOYMENT_FIELDS, key="name") for i, e in enumerate(items)]
        _unique(((label, v["name"]) for label, v in parsed), "name")
        providers = {p.name: p for p in Provider.objects.all()}
        fields = [n for n in DEPLOYMENT_FIELDS if n != "name"]
        for label, values in parsed:
            provider = providers.get(values["provider"])
            if provider is None:
                raise ConfigImportError(f"{label}: provider {values['provider']!r} is not defined")
            data = {**_defaults(Deployment, [f for f in fields if f != "provider"]), **values, "provider": provider}
            data.pop("name")
            self.upsert(
                model=Deployment,
                lookup={"name": values["name"]},
                values=data,
                label=label,
                what=f"deployment {values['name']}",
            )
        return {values["name"] for _, values in parsed}

    def pricing(self, items: list[Any]) -> None:
        parsed = [_parse_entry("pricing", i, e, PRICING_FIELDS, key="model") for i, e in enumerate(items)]
        _unique(
            ((label, (v["vendor"], v["model"], v["effective_from"])) for label, v in parsed),
            "vendor, model and effective_from",
        )
        fields = [n for n in PRICING_FIELDS if n not in ("vendor", "model", "effective_from")]
        # Prices take effect with notice and never retroactively (providers/pricing/services.py).
        pricing_write_lock()
        moment = now()
        earliest = earliest_effective_from(moment)
        for label, values in parsed:
            lookup = {k: values.pop(k) for k in ("vendor", "model", "effective_from")}
            data = {**_defaults(PricingRow, fields), **values}
            what = f"price {lookup['vendor']}/{lookup['model']} from {_moment_text(lookup['effective_from'])}"
            current = PricingRow.objects.filter(**lookup).first()
            if current is not None and current.effective_from < earliest:
                # Price history is append-only once in effect (or about to be): requests are priced with it.
                rewritten = [n for n in PRICE_FIELDS if getattr(current, n) != data[n]]
                if rewritten:
                    raise ConfigImportError(
                        f"{label}: {', '.join(rewritten)} differ from the price in effect since "
                        f"{_moment_text(current.effective_from)}; add an entry with a later effective_from instead"
                    )
            if current is None and lookup["effective_from"] < earliest and not nothing_billed():
                raise ConfigImportError(
                    f"{label}: "
                    + too_early_message(f"{lookup['vendor']}/{lookup['model']}", lookup["effective_from"], moment)
                )
            self.upsert(model=PricingRow, lookup=lookup, values=data, label=label, what=what)

    def rules(self, items: list[Any]) -> None:
        parsed = [_parse_entry("rules", i, e, RULE_FIELDS, key="name") for i, e in enumerate(items)]
        _unique(((label, v["name"]) for label, v in parsed), "name")
        _unique(((label, v["priority"]) for label, v in parsed), "priority")
        names = {v["name"] for _, v in parsed}
        if self.prune:
            for rule in RoutingRule.objects.exclude(name__in=names).order_by("priority"):
                rule.delete()
                self.report.changes.append(f"deleted rule {rule.name}")
        others = dict(RoutingRule.objects.exclude(name__in=names).values_list("priority", "name"))
        for label, values in parsed:
            if values["priority"] in others:
                raise ConfigImportError(
                    f"{label}: priority {values['priority']} is taken by the rule {others[values['priority']]!r}, "
                    "which is not in the document"
                )
        # Priorities are unique: park the rules that move, so two rules can swap places.
        current = dict(RoutingRule.objects.filter(name__in=names).values_list("name", "priority"))
        moving = [v["name"] for _, v in parsed if v["name"] in current and current[v["name"]] != v["priority"]]
        for offset, name in enumerate(moving):
            RoutingRule.objects.filter(name=name).update(priority=-2_000_000_000 + offset)

        deployments = dict(Deployment.objects.values_list("name", "id"))
        fields = [n for n in RULE_FIELDS if n not in ("name", "client_key", "team", "targets")]
        for label, values in parsed:
            name = values.pop("name")
            target_names = values.pop("targets", [])
            client_key = self._client_key(label, values.pop("client_key", ""))
            team = self._team(label, values.pop("team", ""))
            data = {**_defaults(RoutingRule, fields), **values, "client_key": client_key, "team": team}
            rule, created = self.upsert(
                model=RoutingRule,
                lookup={"name": name},
                values=data,
                label=label,
                what=f"rule {name}",
                validate_unique=False,
            )
            self._targets(label, rule, target_names, deployments, created=created)

    def _client_key(self, label: str, reference: str) -> ClientKey | None:
        if not reference:
            return None
        prefix = reference.removeprefix(KEY_MARK).rstrip(".")
        key = ClientKey.objects.filter(prefix=prefix).first()
        if key is None:
            raise ConfigImportError(f"{label}: no client key with the prefix {reference!r} (keys are not imported)")
        return key

    def _team(self, label: str, name: str) -> Team | None:
        if not name:
            return None
        team, created = Team.objects.get_or_create(name=name)
        if created:
            self.report.changes.append(f"created team {name} (no budget)")
        return team

    def _targets(
        self, label: str, rule: RoutingRule, names: list[str], deployments: dict[str, int], *, created: bool
    ) -> None:
        if len(set(names)) != len(names):
            raise ConfigImportError(f"{label}: a deployment is listed twice in targets")
        missing = [n for n in names if n not in deployments]
        if missing:
            raise ConfigImportError(f"{label}: unknown deployment(s) in targets: {', '.join(missing)}")
        current = list(
            RuleTarget.objects.filter(rule=rule).order_by("position", "id").values_list("deployment__name", flat=True)
        )
        if current == names:
            return
        RuleTarget.objects.filter(rule=rule).delete()
        RuleTarget.objects.bulk_create(
            RuleTarget(rule=rule, deployment_id=deployments[n], position=position) for position, n in enumerate(names)
        )
        if not created:
            self.report.changes.append(f"updated rule {rule.name}: targets")

    def routing(self, entry: Any) -> None:
        if not isinstance(entry, dict):
            raise ConfigImportError("routing: must be a mapping")
        unknown = sorted(set(entry) - set(ROUTING_FIELDS))
        if unknown:
            raise ConfigImportError(
                f"routing: unknown field(s) {', '.join(unknown)}; valid: {', '.join(ROUTING_FIELDS)}"
            )
        values = _defaults(RoutingSettings, ROUTING_FIELDS)
        for name, value in entry.items():
            try:
                values[name] = ROUTING_FIELDS[name](value)
            except TypeError as exc:
                raise ConfigImportError(f"routing: '{name}' {exc}, got {value!r}") from None
        settings = RoutingSettings.objects.select_for_update().filter(pk=1).first()
        if settings is None:
            settings = RoutingSettings(pk=1)
            settings.save()
        differing = [name for name, value in values.items() if getattr(settings, name) != value]
        if not differing:
            self.report.unchanged += 1
            return
        for name in differing:
            setattr(settings, name, values[name])
        _clean(settings, "routing")
        settings.save()
        self.report.changes.append(f"updated routing settings: {', '.join(differing)}")

    def prune_unlisted(self, *, providers: set[str] | None, deployments: set[str] | None) -> None:
        if deployments is not None:
            for dep in Deployment.objects.exclude(name__in=deployments).order_by("name"):
                dep.delete()
                self.report.changes.append(f"deleted deployment {dep.name}")
        if providers is not None:
            for provider in Provider.objects.exclude(name__in=providers).order_by("name"):
                provider.delete()
                self.report.changes.append(f"deleted provider {provider.name}")


def gateway_config_import(*, document: dict[str, Any], dry_run: bool = False, prune: bool = False) -> ImportReport:
    """Apply ``document``; sections it leaves out are left alone.

    ``prune`` also deletes the providers, deployments and rules that a present section
    does not list (pricing rows are history and are never pruned). ``dry_run`` reports
    what would change and rolls everything back.
    """
    if not isinstance(document, dict):
        raise ConfigImportError("the document must be a mapping with the sections " + ", ".join(SECTIONS))
    unknown = sorted(set(document) - {"version", *SECTIONS})
    if unknown:
        raise ConfigImportError(f"unknown section(s) {', '.join(unknown)}; valid: version, {', '.join(SECTIONS)}")
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigImportError(f"version {version!r} is not supported (this gateway reads version {FORMAT_VERSION})")

    report = ImportReport(dry_run=dry_run)
    importer = _Importer(report, prune=prune)
    with transaction.atomic():
        provider_items = _section(document, "providers")
        deployment_items = _section(document, "deployments")
        pricing_items = _section(document, "pricing")
        rule_items = _section(document, "rules")
        provider_names = importer.providers(provider_items) if provider_items is not None else None
        deployment_names = importer.deployments(deployment_items) if deployment_items is not None else None
        if pricing_items is not None:
            importer.pricing(pricing_items)
        if rule_items is not None:
            importer.rules(rule_items)
        if prune:
            importer.prune_unlisted(providers=provider_names, deployments=deployment_names)
        if document.get("routing") is not None:
            importer.routing(document["routing"])
        if dry_run:
            transaction.set_rollback(True)
        elif report.changed:
            config_changed()  # bulk writes (targets, parked priorities) send no signals
    return report
