"""An immutable, in-process picture of the routing configuration.

The request path reads only this (and the key cache): no database query per request.
Built by ``load_snapshot()`` from the database; swapped whole when the config changes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from providers.adapters.base import Target

if TYPE_CHECKING:
    from providers.models import PricingRow


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    id: int
    name: str
    model_name: str
    provider_id: int
    provider: str
    kind: str
    vendor: str
    provider_model: str
    weight: int
    priority: int
    context_window: int | None
    target: Target
    max_output_tokens: int | None = None
    endpoint: str = "chat"  # chat | embeddings (providers.models.DeploymentEndpoint)
    rpm_limit: int | None = None
    tpm_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Price:
    id: int
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    effective_from: datetime
    cache_write_1h_per_mtok: Decimal | None = None  # None: the cache-write price


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: int
    name: str
    priority: int
    model_pattern: str
    client_key_id: int | None
    team_id: int | None
    header_name: str
    header_value: str
    metadata_key: str
    metadata_value: str
    stream: bool | None
    min_input_tokens: int | None
    max_input_tokens: int | None
    action: str
    strategy: str
    targets: tuple[str, ...]  # deployment names, in order
    latency_slo_ms: int | None = None
    hedge: bool | None = None  # None: as the routing settings say
    hedge_delay_ms: int | None = None

    @property
    def needs_token_count(self) -> bool:
        return self.min_input_tokens is not None or self.max_input_tokens is not None


@dataclass(frozen=True, slots=True)
class RoutingSettingsInfo:
    strategy: str = "model"
    allow_request_strategy: bool = False
    max_attempts: int = 3
    cooldown_failures: int = 3
    cooldown_seconds: float = 30.0
    latency_slo_ms: int | None = None
    allow_request_latency_slo: bool = False
    slo_min_samples: int = 10
    slo_explore_percent: float = 2.0
    hedge_enabled: bool = False
    hedge_delay_ms: int | None = None
    hedge_budget_percent: float = 10.0
    outlier_enabled: bool = False
    outlier_interval_seconds: float = 10.0
    outlier_consecutive_5xx: int = 5
    outlier_base_ejection_seconds: float = 30.0
    outlier_max_ejection_seconds: float = 300.0
    outlier_max_ejection_percent: int = 10
    outlier_success_rate_stdev_factor: float = 1.9
    outlier_failure_percentage_threshold: int = 85
    outlier_latency_factor: float = 0.0
    outlier_minimum_hosts: int = 5
    outlier_request_volume: int = 100


@dataclass(frozen=True)
class Snapshot:
    version: int
    settings: RoutingSettingsInfo
    deployments_by_model: dict[str, tuple[DeploymentInfo, ...]]
    deployments_by_name: dict[str, DeploymentInfo]
    prices: dict[tuple[str, str], tuple[Price, ...]]  # newest first
    rules: tuple[RuleInfo, ...]
    models: tuple[str, ...] = field(default=())

    def deployments_for(self, model: str) -> tuple[DeploymentInfo, ...]:
        return self.deployments_by_model.get(model, ())

    def price_for(self, deployment: DeploymentInfo, at: datetime) -> Price | None:
        """The price row in effect at ``at`` for the deployment's vendor and model."""
        for price in self.prices.get((deployment.vendor, deployment.provider_model), ()):
            if price.effective_from <= at:
                return price
        return None

    def models_matching(self, pattern: str) -> list[str]:
        return [m for m in self.models if fnmatch.fnmatchcase(m, pattern)]


# RoutingSettings columns copied as they are into RoutingSettingsInfo (max_attempts is clamped)
SETTINGS_FIELDS = tuple(name for name in RoutingSettingsInfo.__dataclass_fields__ if name != "max_attempts")


def price_of(row: PricingRow) -> Price:
    """A pricing row with its empty columns resolved (cache reads and writes: the input price;
    one-hour writes: the cache-write price)."""
    input_price = row.input_per_mtok
    write = row.cache_write_per_mtok if row.cache_write_per_mtok is not None else input_price
    write_1h = row.cache_write_1h_per_mtok
    cached = row.cached_input_per_mtok
    return Price(
        id=row.id,
        input_per_mtok=input_price,
        output_per_mtok=row.output_per_mtok,
        cached_input_per_mtok=cached if cached is not None else input_price,
        cache_write_per_mtok=write,
        cache_write_1h_per_mtok=write_1h if write_1h is not None else write,
        effective_from=row.effective_from,
    )


def load_snapshot(version: int) -> Snapshot:
    from providers.models import Deployment, PricingRow
    from routing.models import RoutingRule, RoutingSettings, RuleTarget

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
