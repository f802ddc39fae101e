"""Shared fixtures: real Postgres and Redis, loopback providers, a live gateway."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(autouse=True)
def _fresh_gateway_state() -> Iterator[None]:
    """Process-wide caches must not leak between tests (truncation sends no signals)."""
    from accounts.keycache import key_cache
    from routing.config.cache import config_cache
    from routing.cooldowns import cooldowns
    from routing.inflight import in_flight
    from routing.outlier import outliers
    from routing.services.hedging import budget
    from usage.latency.live import live_latency

    config_cache.reset_for_tests()
    key_cache.clear()
    cooldowns.reset()
    live_latency.reset()
    outliers.reset()
    in_flight.reset()
    budget.reset()
    yield
    config_cache.reset_for_tests()
    key_cache.clear()
    cooldowns.reset()
    live_latency.reset()
    outliers.reset()
    in_flight.reset()
    budget.reset()


@pytest.fixture
def redis_client() -> Iterator[Any]:
    from gatewaysite.redis_client import get_redis

    client = get_redis()
    assert client is not None, "tests need REDIS_URL"
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def make_provider(db: None) -> Any:
    from providers.models import Provider

    def make(name: str = "fake", kind: str = "openai", base_url: str = "", **fields: Any) -> Provider:
        return Provider.objects.create(
            name=name, kind=kind, base_url=base_url, api_key=fields.pop("api_key", "sk-up"), **fields
        )

    return make


@pytest.fixture
def make_deployment(db: None) -> Any:
    from providers.models import Deployment

    def make(provider: Any, model_name: str = "gpt-4o-mini", name: str | None = None, **fields: Any) -> Deployment:
        return Deployment.objects.create(
            name=name or f"{provider.name}-{model_name}",
            model_name=model_name,
            provider=provider,
            provider_model=fields.pop("provider_model", model_name),
            **fields,
        )

    return make


@pytest.fixture
def make_price(db: None) -> Any:
    from datetime import UTC, datetime

    from providers.models import PricingRow

    def make(vendor: str, model: str, input: str, output: str, **fields: Any) -> PricingRow:
        return PricingRow.objects.create(
            vendor=vendor,
            model=model,
            input_per_mtok=Decimal(input),
            output_per_mtok=Decimal(output),
            effective_from=fields.pop("effective_from", datetime(2024, 1, 1, tzinfo=UTC)),
            **fields,
        )

    return make


@pytest.fixture
def issue_key(db: None) -> Any:
    from accounts.services import key_issue

    def issue(name: str = "test-key", **fields: Any) -> tuple[Any, str]:
        return key_issue(name=name, **fields)

    return issue


@pytest.fixture
def gateway_url(live_server: Any) -> str:
    return live_server.url


@pytest.fixture
def openai_for(gateway_url: str) -> Any:
    import openai

    def make(secret: str, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(api_key=secret, base_url=gateway_url + "/v1", max_retries=0, **kwargs)

    return make


@pytest.fixture
def make_openai_route(
    fake_openai: FakeOpenAI, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any
) -> Any:
    """``make(model, input_per_mtok, output_per_mtok, **deployment)``: ``model`` routed to the
    loopback OpenAI upstream (provider ``up``), priced, and a new key: ``{"key", "secret", "fake"}``."""

    def make(model: str, input_per_mtok: str, output_per_mtok: str, **deployment: Any) -> dict[str, Any]:
        provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
        make_deployment(provider, model, **deployment)
        make_price("openai", model, input_per_mtok, output_per_mtok)
        key, secret = issue_key()
        return {"key": key, "secret": secret, "fake": fake_openai}

    return make


@pytest.fixture
def openai_route(make_openai_route: Any, redis_client: Any) -> dict[str, Any]:
    """``gpt-4o-mini`` routed to the loopback OpenAI upstream (provider ``up``), priced, and a key:
    ``{"key", "secret", "fake"}``."""
    return make_openai_route("gpt-4o-mini", "0.15", "0.60")


@pytest.fixture
def openai_chain(
    make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, gateway_url: str, redis_client: Any
) -> Any:
    """``make(model, {name: upstream}, price=(input, output), **provider)``: one deployment of ``model``
    per loopback upstream, tried in the order given (priority 0, 1, ...), priced, and a new key:
    ``{"url": ..., "secret": ...}``."""

    def make(
        model: str, upstreams: dict[str, Any], *, price: tuple[str, str] = ("0.15", "0.60"), **provider: Any
    ) -> dict[str, Any]:
        for index, (name, server) in enumerate(upstreams.items()):
            made = make_provider(name, base_url=server.url + "/v1", vendor="openai", **provider)
            make_deployment(made, model, name=name, priority=index)
        make_price("openai", model, *price)
        _, secret = issue_key()
        return {"url": gateway_url, "secret": secret}

    return make


@pytest.fixture
def staff_groups(db: None) -> dict[str, Any]:
    """The ``operators`` and ``finance`` groups, made by the shipped migration's own code.

    Transactional tests flush the database, data migrations' rows included, so the groups
    are made again here the way ``migrate`` makes them.
    """
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group, Permission

    migration = importlib.import_module("accounts.migrations.0003_sec_staff_groups")
    migration.create_groups(apps, None)
    # Models that moved app since (routing 0006) keep their permissions under their new app.
    moved = importlib.import_module("routing.migrations.0006_layers_models_moved_out").MOVED
    for name, models in migration.GROUPS.items():
        group = Group.objects.get(name=name)
        for (app_label, model), actions in models.items():
            if app_label == "routing" and model in moved:
                codenames = [a if a.startswith("view_") else f"{a}_{model}" for a in actions]
                group.permissions.add(
                    *Permission.objects.filter(content_type__app_label=moved[model], codename__in=codenames)
                )
    return {group.name: group for group in Group.objects.filter(name__in=migration.GROUPS)}
