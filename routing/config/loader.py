"""Builds the configuration snapshot from the database (5 queries)."""

from __future__ import annotations

from providers.adapters.base import Target
from providers.models import Deployment, PricingRow
from providers.pricing.prices import Price, price_of
from routing.config.snapshot import SETTINGS_FIELDS, DeploymentInfo, RoutingSettingsInfo, RuleInfo, Snapshot
from routing.models import RoutingRule, RoutingSettings, RuleTarget


def load_snapshot(version: int) -> Snapshot:

    row = RoutingSettings.objects.filter(pk=1).first()
    settings = (
        RoutingSettingsInfo(
            **{name: getattr(row, name) for name in SETTINGS_FIELDS},
            max_attempts=max(1, row.max_attempts),
        )
        if row
        else RoutingSettingsInfo()
    )
    by_model: dict[str, list[DeploymentInfo]] = {}
    by_name: dict[str, DeploymentInfo] = {}
    deployments = Deployment.objects.filter(enabled=True, provider__enabled=True).select_related("provider")
    for dep in deployments.order_by("model_name", "priority", "name"):
        provider = dep.provider
        info = DeploymentInfo(
            id=dep.id,
            name=dep.name,
            model_name=dep.model_name,
            provider_id=provider.id,
            provider=provider.name,
            kind=provider.kind,
            vendor=provider.pricing_vendor,
            provider_model=dep.provider_model,
            weight=dep.weight,
            priority=dep.priority,
            context_window=dep.context_window,
            max_output_tokens=dep.max_output_tokens,
            endpoint=dep.endpoint,
            rpm_limit=dep.rpm_limit,
            tpm_limit=dep.tpm_limit,
            target=Target(
                provider=provider.name,
                kind=provider.kind,
                base_url=provider.base_url,
                model=dep.provider_model,
                api_key=provider.resolve_api_key(),
                options=dict(provider.options or {}),
                connect_timeout=provider.connect_timeout,
                read_timeout=provider.read_timeout,
                response_timeout=provider.response_timeout,
                first_chunk_timeout=provider.first_chunk_timeout,
                stream_idle_timeout=provider.stream_idle_timeout,
            ),
        )
        by_model.setdefault(dep.model_name, []).append(info)
        by_name[dep.name] = info

    prices: dict[tuple[str, str], list[Price]] = {}
    for p in PricingRow.objects.order_by("vendor", "model", "-effective_from"):
        prices.setdefault((p.vendor, p.model), []).append(price_of(p))

    targets: dict[int, list[str]] = {}
    for t in RuleTarget.objects.select_related("deployment").order_by("rule_id", "position", "id"):
        targets.setdefault(t.rule_id, []).append(t.deployment.name)
    rules = tuple(
        RuleInfo(
            id=r.id,
            name=r.name,
            priority=r.priority,
            model_pattern=r.model_pattern,
            client_key_id=r.client_key_id,
            team_id=r.team_id,
            header_name=r.header_name.lower(),
            header_value=r.header_value,
            metadata_key=r.metadata_key,
            metadata_value=r.metadata_value,
            stream=r.stream,
            min_input_tokens=r.min_input_tokens,
            max_input_tokens=r.max_input_tokens,
            action=r.action,
            strategy=r.strategy,
            targets=tuple(targets.get(r.id, ())),
            latency_slo_ms=r.latency_slo_ms,
            hedge=r.hedge,
            hedge_delay_ms=r.hedge_delay_ms,
        )
        for r in RoutingRule.objects.filter(enabled=True).order_by("priority")
    )
    return Snapshot(
        version=version,
        settings=settings,
        deployments_by_model={k: tuple(v) for k, v in by_model.items()},
        deployments_by_name=by_name,
        prices={k: tuple(v) for k, v in prices.items()},
        rules=rules,
        models=tuple(sorted(by_model)),
    )
