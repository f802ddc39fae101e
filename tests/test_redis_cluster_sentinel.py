"""The gateway on a real Redis Cluster (3 nodes) and on a Sentinel setup that fails over.

Two gunicorn workers serve a budgeted, rate-limited key through the cluster: every Lua
script (admission: budget + rate limit windows; the recorder's batch: stream + counters)
runs on keys of one hash slot, or Redis Cluster would refuse it with CROSSSLOT. The
consumer drains the stream from the cluster, a revocation reaches both workers through
the cluster's pub/sub and acknowledgements. On Sentinel, the master is killed mid-traffic:
requests keep being answered (spooled while there is no master), and after the failover
every record reaches Postgres exactly once with the key's spend counter equal to the sum.
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from django.db.models import Sum

from accounts.services import key_issue, key_revoke
from gatewaysite.redis_client import SLOT, get_redis, parse_redis_url
from providers.pricing.cost import to_picodollars
from tests.procs import start_gateway
from tests.redis_topologies import RedisCluster, RedisSentinel
from usage.consumer import drain
from usage.models import UsageRecord, UsageRollup

pytestmark = pytest.mark.django_db(transaction=True)


def _route(fake_openai: Any, make_provider: Any, make_deployment: Any, make_price: Any) -> None:
    provider = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(provider, "gpt-4o-mini")
    make_price("openai", "gpt-4o-mini", "0.15", "0.60")


def _client(url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=secret, base_url=url + "/v1", max_retries=0, timeout=15.0, default_headers={"Connection": "close"}
    )


def _ask(client: openai.OpenAI) -> str:
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        return "ok"
    except openai.APIStatusError as exc:
        return str((exc.body or {}).get("code") if isinstance(exc.body, dict) else exc.status_code)


def _drain_all(expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while UsageRecord.objects.count() < expected and time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):  # as the periodic task: tried again at its next turn
            drain(claim_idle_ms=0)
        time.sleep(0.2)


def test_url_forms() -> None:
    assert parse_redis_url("redis://127.0.0.1:6379/3").kind == "plain"
    cluster = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert cluster.kind == "cluster" and cluster.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert cluster.password == "pw"
    sentinel = parse_redis_url("redis+sentinel://s1:26379,s2:26379/gw/2")
    assert (sentinel.kind, sentinel.service, sentinel.db) == ("sentinel", "gw", 2)
    for bad in ("http://x", "redis+sentinel://s1:26379", "redis+cluster://h:1/3", "redis+cluster://nohost"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_the_gateway_on_a_redis_cluster(
    tmp_path: Path,
    settings: Any,
    fake_openai: Any,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
) -> None:
    cluster = RedisCluster(tmp_path).start()
    gunicorn = None
    try:
        settings.REDIS_URL = cluster.url
        _route(fake_openai, make_provider, make_deployment, make_price)
        key, secret = key_issue(name="clustered", budget_usd=Decimal("100"), rpm_limit=1000)
        # kombu has no Cluster transport: the broker is named apart (a plain Redis)
        broker = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
        gunicorn = start_gateway(tmp_path, workers=2, redis_url=cluster.url, **broker).wait_healthy()
        client = _client(gunicorn.url, secret)
        results = [_ask(client) for _ in range(30)]
        assert results == ["ok"] * 30, gunicorn.log()[-3000:]
        _drain_all(30)
        assert UsageRecord.objects.filter(client_key_id=key.id).count() == 30
        total = UsageRecord.objects.aggregate(t=Sum("cost_usd"))["t"]
        assert total > 0 and UsageRollup.objects.aggregate(t=Sum("cost_usd"))["t"] == total
        redis = get_redis()
        assert int(redis.get(f"{SLOT}:spend:key:{key.id}")) == to_picodollars(total)
        # the keys of the usage scripts share one slot; the cluster really has three nodes
        assert len({node.name for node in redis.get_nodes()}) == 3
        assert redis.keyslot(f"{SLOT}:usage") == redis.keyslot(f"{SLOT}:budget:key:{key.id}:2026-11")

        key_revoke(key=key)  # waits until every process serves the change (acks in the cluster)
        deadline = time.monotonic() + 10
        refused = 0
        while refused < 10 and time.monotonic() < deadline:
            result = _ask(client)
            assert result in ("ok", "key_revoked")
            refused = refused + 1 if result == "key_revoked" else 0
        assert refused == 10
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        cluster.stop()


def test_the_gateway_through_a_sentinel_failover(
    tmp_path: Path,
    settings: Any,
    fake_openai: Any,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
) -> None:
    sentinel = RedisSentinel(tmp_path).start()
    gunicorn = None
    try:
        settings.REDIS_URL = sentinel.url
        _route(fake_openai, make_provider, make_deployment, make_price)
        key, secret = key_issue(name="sentinel")
        gunicorn = start_gateway(tmp_path, workers=2, redis_url=sentinel.url).wait_healthy()
        client = _client(gunicorn.url, secret)
        assert [_ask(client) for _ in range(10)] == ["ok"] * 10
        sentinel.kill_master()
        # answered during and after the failover (spooled while no master answered)
        assert [_ask(client) for _ in range(10)] == ["ok"] * 10, gunicorn.log()[-3000:]
        _drain_all(20, timeout=40)
        ids = list(UsageRecord.objects.values_list("request_id", flat=True))
        assert len(ids) == 20 == len(set(ids)), gunicorn.log()[-6000:]
        total = UsageRecord.objects.aggregate(t=Sum("cost_usd"))["t"]
        assert UsageRollup.objects.aggregate(t=Sum("cost_usd"))["t"] == total
        spend = get_redis().get(f"{SLOT}:spend:key:{key.id}")
        assert int(spend) == to_picodollars(total)
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        sentinel.stop()
