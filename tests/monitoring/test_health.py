"""``/healthz`` is liveness only; ``/readyz`` checks the database, Redis, the configuration
and the usage consumer, and names what failed (503). Faults are real: a private Redis
that the test stops, a database address where nothing listens, an old event in the stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from gatewaysite.clock import now
from tests.procs import PrivateRedis, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_ready_when_everything_is(client: Any, redis_client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"database", "redis", "config", "usage_consumer"}
    assert all(check["ok"] for check in body["checks"].values())
    assert client.get("/healthz").json() == {"status": "ok"}


def test_usage_consumer_lag_fails_readiness(client: Any, redis_client: Any, settings: Any) -> None:
    stream = settings.GATEWAY["USAGE_STREAM"]
    old = int((time.time() - 120) * 1000)
    redis_client.xadd(stream, {"e": b"{}"}, id=f"{old}-0")  # an event two minutes old, never ingested
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["usage_consumer"]
    assert body["checks"]["usage_consumer"]["lag_seconds"] >= 119
    assert body["checks"]["usage_consumer"]["stream_length"] == 1


def test_stale_configuration_fails_readiness(client: Any, redis_client: Any) -> None:
    from gatewaysite.models import ConfigVersion
    from routing.config.cache import config_cache

    config_cache.current()
    # Another process changed the configuration a minute ago and this one never saw it
    # (its poller is off in tests); an update() sends no signal, so nothing invalidates.
    ConfigVersion.objects.update_or_create(pk=1, defaults={"version": 10_000})
    ConfigVersion.objects.filter(pk=1).update(updated_at=now() - timedelta(seconds=60))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["config"]
    assert response.json()["checks"]["config"]["stale_seconds"] >= 59


def test_database_down_fails_readiness(client: Any, redis_client: Any) -> None:
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update({"HOST": "127.0.0.1", "PORT": str(free_port())})
    try:
        response = client.get("/readyz")
        healthz = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    body = response.json()
    assert "database" in body["failed"]
    assert "OperationalError" in body["checks"]["database"]["error"]
    assert healthz.status_code == 200  # liveness does not depend on the database


@pytest.fixture
def private_redis(tmp_path: Path, settings: Any) -> Iterator[PrivateRedis]:
    from gatewaysite.redis_client import reset_redis

    server = PrivateRedis(tmp_path / "redis", durable=False).start()
    settings.REDIS_URL = server.url
    reset_redis()
    try:
        yield server
    finally:
        server.kill()
        reset_redis()


def test_redis_down_fails_readiness(client: Any, private_redis: PrivateRedis) -> None:
    assert client.get("/readyz").status_code == 200
    private_redis.kill()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert "redis" in body["failed"] and "usage_consumer" in body["failed"]
    assert "database" not in body["failed"]
    assert "ConnectionError" in body["checks"]["redis"]["error"]
