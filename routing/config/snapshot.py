"""An immutable, in-process picture of the routing configuration.

The request path reads only this (and the key cache): no database query per request.
Built by ``load_snapshot()`` (``routing/config/loader.py``) from the database; swapped whole when the config changes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime

from providers.adapters.base import Target
from providers.pricing.prices import Price, price_in_effect


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
        return price_in_effect(self.prices.get((deployment.vendor, deployment.provider_model), ()), at)

    def models_matching(self, pattern: str) -> list[str]:
        return [m for m in self.models if fnmatch.fnmatchcase(m, pattern)]


# RoutingSettings columns copied as they are into RoutingSettingsInfo (max_attempts is clamped)
SETTINGS_FIELDS = tuple(name for name in RoutingSettingsInfo.__dataclass_fields__ if name != "max_attempts")
