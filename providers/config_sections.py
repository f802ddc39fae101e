"""The providers' sections of the configuration document: providers, deployments, pricing.

Entries are matched by natural key (provider name, deployment name, pricing (vendor,
model, effective_from)) and only what differs is written; the document never holds a
stored provider key (``api_key_env`` names an environment variable instead). The
orchestrator (``routing/services/config_io.py``) runs the sections in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from gatewaysite.clock import now
from gatewaysite.config.document import (
    Boolean,
    ConfigImportError,
    DocumentEntry,
    ImportReport,
    Integer,
    Mapping,
    Moment,
    Money,
    Number,
    OptionalInteger,
    OptionalMoney,
    Text,
    compact,
    decimal_text,
    entry_parse,
    model_defaults,
    moment_text,
    require_unique,
)
from gatewaysite.config.notice import earliest_effective_from, pricing_write_lock
from providers.models import Deployment, PricingRow, Provider
from providers.pricing.services import nothing_billed, too_early_message

PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
)


class ProviderEntry(DocumentEntry):
    required_fields = ("name", "kind")
    # Import only: a literal key (discouraged; prefer api_key_env), and whether the exporter had one stored.
    import_only = ("api_key", "api_key_stored")

    name = Text()
    kind = Text()
    vendor = Text()
    base_url = Text()
    api_key_env = Text()
    options = Mapping()
    connect_timeout = Number()
    read_timeout = Number()
    response_timeout = Number()
    first_chunk_timeout = Number()
    stream_idle_timeout = Number()
    enabled = Boolean()
    api_key = Text()
    api_key_stored = Boolean()


class DeploymentEntry(DocumentEntry):
    required_fields = ("name", "model_name", "provider", "provider_model")

    name = Text()
    model_name = Text()
    provider = Text()
    provider_model = Text()
    endpoint = Text()
    weight = Integer()
    priority = Integer()
    enabled = Boolean()
    context_window = OptionalInteger()
    max_output_tokens = OptionalInteger()
    rpm_limit = OptionalInteger()
    tpm_limit = OptionalInteger()


class PricingEntry(DocumentEntry):
    required_fields = ("vendor", "model", "input_per_mtok", "output_per_mtok", "effective_from")

    vendor = Text()
    model = Text()
    input_per_mtok = Money()
    output_per_mtok = Money()
    cached_input_per_mtok = OptionalMoney()
    cache_write_per_mtok = OptionalMoney()
    cache_write_1h_per_mtok = OptionalMoney()
    effective_from = Moment()


# ``source`` is also an attribute of every DRF field: declared here, after the class body.
PricingEntry._declared_fields["source"] = Text()


# --- export -----------------------------------------------------------------------------------


def providers_export() -> list[dict[str, Any]]:
    entries = []
    for provider in Provider.objects.order_by("name"):
        entry = compact({name: getattr(provider, name) for name in ProviderEntry.exported()})
        if provider.api_key:
            entry["api_key_stored"] = True  # the key itself is never exported
        entries.append(entry)
    return entries


def deployments_export() -> list[dict[str, Any]]:
    entries = []
    names = DeploymentEntry.exported()
    for dep in Deployment.objects.select_related("provider").order_by("name"):
        entry = {name: getattr(dep, name) for name in names if name != "provider"}
        entry["provider"] = dep.provider.name
        entries.append(compact({name: entry[name] for name in names}))
    return entries


def pricing_export() -> list[dict[str, Any]]:
    entries = []
    for row in PricingRow.objects.order_by("vendor", "model", "effective_from"):
        entry = {}
        for name in PricingEntry.exported():
            value = getattr(row, name)
            if isinstance(value, Decimal):
                value = decimal_text(value)
            elif isinstance(value, datetime):
                value = moment_text(value)
            entry[name] = value
        entries.append(compact(entry))
    return entries


# --- import -----------------------------------------------------------------------------------


def providers_import(*, items: list[Any], report: ImportReport) -> set[str]:
    """Create or update the listed providers; the names listed."""
    parsed = [entry_parse("providers", i, e, ProviderEntry, key="name") for i, e in enumerate(items)]
    require_unique(((label, v["name"]) for label, v in parsed), "name")
    fields = [n for n in ProviderEntry.exported() if n != "name"]
    for label, values in parsed:
        stored_flag = values.pop("api_key_stored", False)
        data = {**model_defaults(Provider, fields), **values}
        data.pop("name")
        provider, _ = report.upsert(
            model=Provider,
            lookup={"name": values["name"]},
            values=data,
            label=label,
            what=f"provider {values['name']}",
        )
        if stored_flag and not provider.api_key and not provider.api_key_env:
            report.warnings.append(
                f"provider {provider.name}: the document says a key was stored, but none is here; "
                "set it in the admin or give api_key_env"
            )
    return {values["name"] for _, values in parsed}


def deployments_import(*, items: list[Any], report: ImportReport) -> set[str]:
    """Create or update the listed deployments (their providers must exist); the names listed."""
    parsed = [entry_parse("deployments", i, e, DeploymentEntry, key="name") for i, e in enumerate(items)]
    require_unique(((label, v["name"]) for label, v in parsed), "name")
    providers = {p.name: p for p in Provider.objects.all()}
    fields = [n for n in DeploymentEntry.exported() if n != "name"]
    for label, values in parsed:
        provider = providers.get(values["provider"])
        if provider is None:
            raise ConfigImportError(f"{label}: provider {values['provider']!r} is not defined")
        data = {**model_defaults(Deployment, [f for f in fields if f != "provider"]), **values, "provider": provider}
        data.pop("name")
        report.upsert(
            model=Deployment,
            lookup={"name": values["name"]},
            values=data,
            label=label,
            what=f"deployment {values['name']}",
        )
    return {values["name"] for _, values in parsed}


def pricing_rows_import(*, items: list[Any], report: ImportReport) -> None:
    """Add the listed price rows; a row in effect (or within the notice) is never rewritten."""
    parsed = [entry_parse("pricing", i, e, PricingEntry, key="model") for i, e in enumerate(items)]
    require_unique(
        ((label, (v["vendor"], v["model"], v["effective_from"])) for label, v in parsed),
        "vendor, model and effective_from",
    )
    fields = [n for n in PricingEntry.exported() if n not in ("vendor", "model", "effective_from")]
    # Prices take effect with notice and never retroactively (providers/pricing/services.py).
    pricing_write_lock()
    moment = now()
    earliest = earliest_effective_from(moment)
    for label, values in parsed:
        lookup = {k: values.pop(k) for k in ("vendor", "model", "effective_from")}
        data = {**model_defaults(PricingRow, fields), **values}
        what = f"price {lookup['vendor']}/{lookup['model']} from {moment_text(lookup['effective_from'])}"
        current = PricingRow.objects.filter(**lookup).first()
        if current is not None and current.effective_from < earliest:
            # Price history is append-only once in effect (or about to be): requests are priced with it.
            rewritten = [n for n in PRICE_FIELDS if getattr(current, n) != data[n]]
            if rewritten:
                raise ConfigImportError(
                    f"{label}: {', '.join(rewritten)} differ from the price in effect since "
                    f"{moment_text(current.effective_from)}; add an entry with a later effective_from instead"
                )
        if current is None and lookup["effective_from"] < earliest and not nothing_billed():
            raise ConfigImportError(
                f"{label}: "
                + too_early_message(f"{lookup['vendor']}/{lookup['model']}", lookup["effective_from"], moment)
            )
        report.upsert(model=PricingRow, lookup=lookup, values=data, label=label, what=what)


def deployments_prune(*, keep: set[str], report: ImportReport) -> None:
    for dep in Deployment.objects.exclude(name__in=keep).order_by("name"):
        dep.delete()
        report.changes.append(f"deleted deployment {dep.name}")


def providers_prune(*, keep: set[str], report: ImportReport) -> None:
    for provider in Provider.objects.exclude(name__in=keep).order_by("name"):
        provider.delete()
        report.changes.append(f"deleted provider {provider.name}")
