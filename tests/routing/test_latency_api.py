"""``GET /v1/routing/latency`` and the latency admin pages."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

import pytest

from gatewaysite.clock import now
from usage.ingest import ingest_events
from usage.latency.histogram import RELATIVE_ERROR
from usage.latency.rollup import refresh_buckets

URL = "/v1/routing/latency"


def sample(rid: str, *, ago: timedelta, ms: float, deployment: str, provider: str, **fields: Any) -> dict:
    return {
        "request_id": rid,
        "attempt": fields.get("attempt", 1),
        "created_at": (now() - ago).isoformat(),
        "provider": provider,
        "deployment": deployment,
        "model": "m",
        "ok": fields.get("ok", True),
        "http_status": 200 if fields.get("ok", True) else 502,
        "stream": fields.get("ttft_ms") is not None,
        "total_ms": ms + 1,
        "upstream_ms": ms,
        "ttft_ms": fields.get("ttft_ms"),
        "overhead_ms": 1.0,
    }


def record(samples: list[dict]) -> None:
    events = [
        {
            "record": {"request_id": s["request_id"], "created_at": s["created_at"], "status": "ok", "model": "m"},
            "samples": [s],
        }
        for s in samples
    ]
    refresh_buckets(ingest_events(events))


@pytest.fixture
def world(make_provider: Any, make_deployment: Any, issue_key: Any) -> dict[str, Any]:
    p1, p2 = (
        make_provider("p1", base_url="http://127.0.0.1:1/v1"),
        make_provider("p2", base_url="http://127.0.0.1:1/v1"),
    )
    make_deployment(p1, "gpt-4o-mini", name="d1")
    make_deployment(p1, "gpt-4o", name="d1b")
    make_deployment(p2, "gpt-4o-mini", name="d2")
    samples = []
    # d1: 10 samples of 10..100 ms five minutes ago (even ones streamed), one failure
    for i in range(1, 11):
        ttft = i * 2.0 if i % 2 == 0 else None
        samples.append(
            sample(f"a{i}", ago=timedelta(minutes=5), ms=i * 10.0, deployment="d1", provider="p1", ttft_ms=ttft)
        )
    samples.append(sample("a-err", ago=timedelta(minutes=5), ms=3000, deployment="d1", provider="p1", ok=False))
    # older d1 samples, one per age
    for name, ago in (("b30m", timedelta(minutes=30)), ("c3h", timedelta(hours=3)), ("d2d", timedelta(days=2))):
        samples.append(sample(name, ago=ago, ms=1000.0, deployment="d1", provider="p1"))
    samples.append(sample("e10d", ago=timedelta(days=10), ms=1000.0, deployment="d1", provider="p1"))
    samples.append(sample("f", ago=timedelta(minutes=3), ms=50.0, deployment="d2", provider="p2"))
    samples.append(sample("g", ago=timedelta(minutes=3), ms=7.0, deployment="d1b", provider="p1"))
    record(samples)
    _, secret = issue_key()
    _, limited = issue_key("limited", allowed_models=["gpt-4o"])
    return {"secret": secret, "limited": limited}


def get(client: Any, secret: str, **params: str) -> Any:
    return client.get(URL, params, HTTP_AUTHORIZATION=f"Bearer {secret}")


def deployments(body: dict) -> dict[str, dict]:
    return {d["deployment"]: d for p in body["providers"] for d in p["deployments"]}


@pytest.mark.django_db
def test_stats_per_provider_and_deployment(client: Any, world: dict[str, Any]) -> None:
    response = get(client, world["secret"], window="15m")
    assert response.status_code == 200
    body = response.json()
    assert body["window"] == "15m"
    assert [p["provider"] for p in body["providers"]] == ["p1", "p2"]
    d1 = deployments(body)["d1"]
    assert d1["model"] == "gpt-4o-mini"
    assert (d1["samples"], d1["errors"]) == (11, 1)
    assert d1["error_rate"] == pytest.approx(1 / 11, abs=1e-4)
    latency = d1["latency_ms"]
    assert latency["count"] == 10
    assert (latency["avg"], latency["min"], latency["max"]) == (55.0, 10.0, 100.0)
    assert latency["p50"] == pytest.approx(50, rel=RELATIVE_ERROR)
    assert latency["p95"] == pytest.approx(100, rel=RELATIVE_ERROR)
    assert latency["p99"] == pytest.approx(100, rel=RELATIVE_ERROR)
    ttft = d1["ttft_ms"]
    assert (ttft["count"], ttft["avg"], ttft["min"], ttft["max"]) == (5, 12.0, 4.0, 20.0)
    assert d1["overhead_ms_avg"] == 1.0
    p1 = body["providers"][0]
    assert (p1["samples"], p1["latency_ms"]["count"], p1["latency_ms"]["min"]) == (12, 11, 7.0)
    assert sorted(d["deployment"] for d in p1["deployments"]) == ["d1", "d1b"]
    assert deployments(body)["d2"]["latency_ms"]["avg"] == 50.0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("window", "d1_samples"),
    [("15m", 11), (None, 12), ("1h", 12), ("24h", 13), ("7d", 14), ("30d", 15)],
)
def test_windows(client: Any, world: dict[str, Any], window: str | None, d1_samples: int) -> None:
    params = {"window": window} if window else {}
    body = get(client, world["secret"], **params).json()
    assert body["window"] == (window or "1h")
    assert deployments(body)["d1"]["samples"] == d1_samples


@pytest.mark.django_db
@pytest.mark.parametrize("window", ["abc", "0m", "15", "-1h", "1.5h", "15s", "91d", "1w"])
def test_bad_window_is_an_openai_error(client: Any, world: dict[str, Any], window: str) -> None:
    response = get(client, world["secret"], window=window)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_window"
    assert error["param"] == "window"


@pytest.mark.django_db
def test_key_limited_to_models_sees_their_deployments_only(client: Any, world: dict[str, Any]) -> None:
    body = get(client, world["limited"]).json()
    assert list(deployments(body)) == ["d1b"]
    assert client.get(URL).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_seed_curl_example(world: dict[str, Any], gateway_url: str) -> None:
    result = subprocess.run(
        ["curl", "-sS", f"{gateway_url}/v1/routing/latency", "-H", f"Authorization: Bearer {world['secret']}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body = json.loads(result.stdout)
    assert deployments(body)["d1"]["samples"] == 12
    assert body["providers"][0]["latency_ms"]["p50"] is not None


@pytest.mark.django_db
def test_admin_pages(client: Any, world: dict[str, Any], django_user_model: Any) -> None:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    response = client.get("/admin/usage/latencyrollup/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<svg" in page and "<polyline" in page
    assert "d1" in page
    response = client.get("/admin/usage/latencyrollup/chart/", {"range": "7d"})
    assert response.status_code == 200
    assert "<polyline" in response.content.decode()
    assert client.get("/admin/usage/latencyrollup/chart/", {"range": "bogus"}).status_code == 200
    response = client.get("/admin/usage/latencysample/")
    assert response.status_code == 200
    assert "a-err" in response.content.decode()
    assert client.get("/admin/usage/latencysample/add/").status_code == 403
    assert client.get("/admin/usage/latencyrollup/add/").status_code == 403
