"""The routing sections of the configuration document: rules (with their ordered targets)
and the routing settings. Rules name deployments, client keys (by prefix) and teams;
keys are never imported, teams are created when a rule names a new one.
"""

from __future__ import annotations

from typing import Any

from accounts.keys import KEY_MARK
from accounts.models import ClientKey, Team
from gatewaysite.config.document import (
    Boolean,
    ConfigImportError,
    DocumentEntry,
    ImportReport,
    Integer,
    Names,
    Number,
    OptionalBoolean,
    OptionalInteger,
    Text,
    compact,
    entry_parse,
    entry_values,
    model_clean,
    model_defaults,
    require_unique,
)
from providers.models import Deployment
from routing.models import RoutingRule, RoutingSettings, RuleTarget


class RuleEntry(DocumentEntry):
    required_fields = ("name", "priority")

    name = Text()
    priority = Integer()
    enabled = Boolean()
    description = Text()
    model_pattern = Text()
    client_key = Text()
    team = Text()
    header_name = Text()
    header_value = Text()
    metadata_key = Text()
    metadata_value = Text()
    stream = OptionalBoolean()
    min_input_tokens = OptionalInteger()
    max_input_tokens = OptionalInteger()
    action = Text()
    strategy = Text()
    targets = Names()
    latency_slo_ms = OptionalInteger()
    hedge = OptionalBoolean()
    hedge_delay_ms = OptionalInteger()


class RoutingEntry(DocumentEntry):
    strategy = Text()
    allow_request_strategy = Boolean()
    max_attempts = Integer()
    cooldown_failures = Integer()
    cooldown_seconds = Number()
    latency_slo_ms = OptionalInteger()
    allow_request_latency_slo = Boolean()
    slo_min_samples = Integer()
    slo_explore_percent = Number()
    hedge_enabled = Boolean()
    hedge_delay_ms = OptionalInteger()
    hedge_budget_percent = Number()
    outlier_enabled = Boolean()
    outlier_interval_seconds = Number()
    outlier_consecutive_5xx = Integer()
    outlier_base_ejection_seconds = Number()
    outlier_max_ejection_seconds = Number()
    outlier_max_ejection_percent = Integer()
    outlier_success_rate_stdev_factor = Number()
    outlier_failure_percentage_threshold = Integer()
    outlier_latency_factor = Number()
    outlier_minimum_hosts = Integer()
    outlier_request_volume = Integer()


# --- export -----------------------------------------------------------------------------------


def routing_settings_export() -> dict[str, Any]:
    settings = RoutingSettings.objects.filter(pk=1).first() or RoutingSettings(pk=1)
    return {name: getattr(settings, name) for name in RoutingEntry.exported()}


def rules_export() -> list[dict[str, Any]]:
    names = RuleEntry.exported()
    targets: dict[int, list[str]] = {}
    for target in RuleTarget.objects.select_related("deployment").order_by("rule_id", "position", "id"):
        targets.setdefault(target.rule_id, []).append(target.deployment.name)
    entries = []
    for rule in RoutingRule.objects.select_related("client_key", "team").order_by("priority"):
        entry = {name: getattr(rule, name) for name in names if name not in ("client_key", "team", "targets")}
        entry["client_key"] = f"{KEY_MARK}{rule.client_key.prefix}" if rule.client_key else None
        entry["team"] = rule.team.name if rule.team else None
        entry["targets"] = targets.get(rule.id, [])
        entries.append(compact({name: entry[name] for name in names}))
    return entries


# --- import -----------------------------------------------------------------------------------


def rules_import(*, items: list[Any], report: ImportReport, prune: bool) -> None:
    """Create or update the listed rules and their targets; ``prune``: delete the unlisted ones."""
    parsed = [entry_parse("rules", i, e, RuleEntry, key="name") for i, e in enumerate(items)]
    require_unique(((label, v["name"]) for label, v in parsed), "name")
    require_unique(((label, v["priority"]) for label, v in parsed), "priority")
    names = {v["name"] for _, v in parsed}
    if prune:
        for rule in RoutingRule.objects.exclude(name__in=names).order_by("priority"):
            rule.delete()
            report.changes.append(f"deleted rule {rule.name}")
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
    fields = [n for n in RuleEntry.exported() if n not in ("name", "client_key", "team", "targets")]
    for label, values in parsed:
        name = values.pop("name")
        target_names = values.pop("targets", [])
        client_key = _client_key(label, values.pop("client_key", ""))
        team = _team(report, values.pop("team", ""))
        data = {**model_defaults(RoutingRule, fields), **values, "client_key": client_key, "team": team}
        rule, created = report.upsert(
            model=RoutingRule,
            lookup={"name": name},
            values=data,
            label=label,
            what=f"rule {name}",
            validate_unique=False,
        )
        _targets_set(report, label, rule, target_names, deployments, created=created)


def _client_key(label: str, reference: str) -> ClientKey | None:
    if not reference:
        return None
    prefix = reference.removeprefix(KEY_MARK).rstrip(".")
    key = ClientKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise ConfigImportError(f"{label}: no client key with the prefix {reference!r} (keys are not imported)")
    return key


def _team(report: ImportReport, name: str) -> Team | None:
    if not name:
        return None
    team, created = Team.objects.get_or_create(name=name)
    if created:
        report.changes.append(f"created team {name} (no budget)")
    return team


def _targets_set(
    report: ImportReport, label: str, rule: RoutingRule, names: list[str], deployments: dict[str, int], *, created: bool
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
        report.changes.append(f"updated rule {rule.name}: targets")


def routing_settings_import(*, entry: Any, report: ImportReport) -> None:
    """Update the routing settings to ``entry`` (fields left out take their defaults)."""
    if not isinstance(entry, dict):
        raise ConfigImportError("routing: must be a mapping")
    values = {
        **model_defaults(RoutingSettings, RoutingEntry.exported()),
        **entry_values("routing", entry, RoutingEntry),
    }
    settings = RoutingSettings.objects.select_for_update().filter(pk=1).first()
    if settings is None:
        settings = RoutingSettings(pk=1)
        settings.save()
    differing = [name for name, value in values.items() if getattr(settings, name) != value]
    if not differing:
        report.unchanged += 1
        return
    for name in differing:
        setattr(settings, name, values[name])
    model_clean(settings, "routing")
    settings.save()
    report.changes.append(f"updated routing settings: {', '.join(differing)}")
