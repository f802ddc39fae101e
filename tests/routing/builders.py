"""Routing objects built in memory (no database): snapshots, deployments, prices, rules, keys."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from accounts.keycache import KeyInfo
from providers.adapters.base import Target
from providers.pricing.prices import Price
from routing.config.snapshot import DeploymentInfo, RoutingSettingsInfo, RuleInfo, Snapshot
from routing.strategies.base import RouteRequest

JAN_2024 = datetime(2024, 1, 1, tzinfo=UTC)


def deployment(
    name: str,
    model: str = "gpt-4o",
    *,
    weight: int = 1,
    priority: int = 100,
    vendor: str = "openai",
    provider: str | None = None,
    provider_model: str | None = None,
    id: int = 0,
) -> DeploymentInfo:
    provider = provider or name
    provider_model = provider_model or name
    return DeploymentInfo(
        id=id or zlib.crc32(name.encode()) % 100_000,  # stable across runs (hash() is salted per process)
        name=name,
        model_name=model,
        provider_id=1,
        provider=provider,
        kind="mock",
        vendor=vendor,
        provider_model=provider_model,
        weight=weight,
        priority=priority,
        context_window=None,
        target=Target(provider=provider, kind="mock", base_url="", model=provider_model, api_key=""),
    )


def price(input: str, output: str, *, id: int = 1, effective_from: datetime = JAN_2024) -> Price:
    return Price(
        id=id,
        input_per_mtok=Decimal(input),
        output_per_mtok=Decimal(output),
        cached_input_per_mtok=Decimal(input),
        cache_write_per_mtok=Decimal(input),
        effective_from=effective_from,
    )


def rule(name: str, priority: int, *, targets: tuple[str, ...] = (), **fields: Any) -> RuleInfo:
    values: dict[str, Any] = {
        "id": priority,
        "name": name,
        "priority": priority,
        "model_pattern": "",
        "client_key_id": None,
        "team_id": None,
        "header_name": "",
        "header_value": "",
        "metadata_key": "",
        "metadata_value": "",
        "stream": None,
        "min_input_tokens": None,
        "max_input_tokens": None,
        "action": "route",
        "strategy": "",
        "targets": targets,
    }
    values.update(fields)
    return RuleInfo(**values)


def snapshot(
    deployments: list[DeploymentInfo],
    *,
    prices: dict[str, list[Price]] | None = None,
    rules: tuple[RuleInfo, ...] = (),
    settings: RoutingSettingsInfo | None = None,
) -> Snapshot:
    """``prices`` maps a deployment's provider model (vendor openai) to its price rows, newest first."""
    by_model: dict[str, list[DeploymentInfo]] = {}
    for d in deployments:
        by_model.setdefault(d.model_name, []).append(d)
    return Snapshot(
        version=1,
        settings=settings or RoutingSettingsInfo(),
        deployments_by_model={m: tuple(ds) for m, ds in by_model.items()},
        deployments_by_name={d.name: d for d in deployments},
        prices={("openai", model): tuple(rows) for model, rows in (prices or {}).items()},
        rules=tuple(sorted(rules, key=lambda r: r.priority)),
        models=tuple(sorted(by_model)),
    )


def key(id: int = 1, *, team_id: int | None = None, strategy: str = "", allowed: tuple[str, ...] = ()) -> KeyInfo:
    return KeyInfo(
        id=id,
        prefix=f"p{id}",
        name=f"key-{id}",
        secret_hash="",
        team_id=team_id,
        team=f"team-{team_id}" if team_id else "",
        allowed_models=frozenset(allowed),
        strategy=strategy,
        budget_usd=None,
        budget_period="month",
        team_budget_usd=None,
        team_budget_period="month",
        expires_at=None,
        revoked=False,
        metadata={},
    )


def route(
    snap: Snapshot,
    model: str = "gpt-4o",
    *,
    client: KeyInfo | None = None,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    content: str = "Hello",
    **body: Any,
) -> RouteRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    if stream:
        payload["stream"] = True
    return RouteRequest(
        model=model,
        body=payload,
        stream=stream,
        key=client or key(),
        snapshot=snap,
        headers=headers or {},
    )
