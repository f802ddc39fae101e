"""``/metrics`` counts what the gateway served, with bounded labels, behind a token or network rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import completion_json, error_json
from tests.monitoring.conftest import scrape

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Hello"}]


def test_completions_are_counted_with_tokens_cost_and_latency(
    openai_route: dict[str, Any], openai_for: Any, gateway_url: str
) -> None:
    client = openai_for(openai_route["secret"])
    costs = Decimal(0)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        costs += Decimal(raw.headers["x-gateway-cost-usd"])
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    costs += Decimal(chunks[-1].model_extra["x_gateway"]["cost_usd"])

    metrics = scrape(gateway_url)
    served = {"model": "gpt-4o-mini", "deployment": "up-gpt-4o-mini", "provider": "up"}
    assert metrics.value("gateway_requests_total", **served, status="200", outcome="ok") == 3
    assert metrics.value("gateway_tokens_total", **served, kind="prompt") == 3 * 12
    assert metrics.value("gateway_tokens_total", **served, kind="completion") == 2 * 7 + 4
    assert Decimal(str(metrics.value("gateway_cost_usd_total", **served))) == costs
    assert metrics.value("gateway_upstream_latency_seconds_count", deployment="up-gpt-4o-mini") == 3
    assert metrics.value("gateway_upstream_latency_seconds_bucket", deployment="up-gpt-4o-mini", le="+Inf") == 3
    assert metrics.value("gateway_time_to_first_token_seconds_count", deployment="up-gpt-4o-mini") == 1
    assert metrics.value("gateway_overhead_seconds_count") == 3
    assert metrics.value("gateway_upstream_attempts_total", deployment="up-gpt-4o-mini", outcome="ok") == 3
    route = {"route": "v1/chat/completions", "method": "POST", "status": "200"}
    assert metrics.value("gateway_http_requests_total", **route) == 3
    assert metrics.value("gateway_deployment_cooldown", deployment="up-gpt-4o-mini") == 0
    # no per-request label anywhere
    for sample in metrics.samples:
        assert not any(v.startswith(("req_", "chatcmpl")) for v in sample.labels.values()), sample


def test_fallbacks_reasons_and_cooldown(
    fake_openai: Any,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    redis_client: Any,
    openai_for: Any,
    gateway_url: str,
) -> None:
    from routing.models import RoutingSettings

    RoutingSettings.objects.update_or_create(pk=1, defaults={"cooldown_failures": 2, "strategy": "model"})
    bad = make_provider("bad", base_url=fake_openai.url + "/bad/v1", vendor="openai")
    good = make_provider("good", base_url=fake_openai.url + "/v1", vendor="openai")
    make_deployment(bad, "gpt-4o-mini", priority=0)
    make_deployment(good, "gpt-4o-mini", priority=1)
    make_price("openai", "gpt-4o-mini", "0.15", "0.60")
    _, secret = issue_key()
    fake_openai.queue(
        Reply(status=429, json=error_json("slow down", code="rate_limit_exceeded")),
        Reply(json=completion_json()),
    )
    fake_openai.queue(Reply(status=500, json=error_json("boom")))
    client = openai_for(secret)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    metrics = scrape(gateway_url)
    assert metrics.value("gateway_fallbacks_total", deployment="bad-gpt-4o-mini", reason="rate_limited") == 1
    assert metrics.value("gateway_fallbacks_total", deployment="bad-gpt-4o-mini", reason="upstream_error") == 1
    assert metrics.value("gateway_upstream_attempts_total", deployment="bad-gpt-4o-mini", outcome="error") == 2
    assert metrics.value("gateway_requests_total", deployment="good-gpt-4o-mini", status="200") == 2
    assert metrics.value("gateway_deployment_cooldown", deployment="bad-gpt-4o-mini") == 1
    assert metrics.value("gateway_deployment_cooldown", deployment="good-gpt-4o-mini") == 0


def test_budget_refusals_and_utilization(openai_route: dict[str, Any], openai_for: Any, gateway_url: str) -> None:
    from accounts.services import key_issue

    _, tight = key_issue(name="tight", budget_usd=Decimal("0.01"), budget_period="day")
    with pytest.raises(openai.RateLimitError):  # up to 100,000 output tokens at $0.60/M: $0.06 > $0.01
        openai_for(tight).chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=100_000)
    _, roomy = key_issue(name="roomy", budget_usd=Decimal("1.00"), budget_period="month")
    raw = openai_for(roomy).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=50
    )
    spent = Decimal(raw.headers["x-gateway-cost-usd"])

    metrics = scrape(gateway_url)
    assert metrics.value("gateway_refusals_total", reason="budget") == 1
    assert metrics.value("gateway_refusals_total", reason="rate_limit") == 0
    [roomy_series] = [s for s in metrics.series("gateway_budget_utilization_ratio") if s["name"].startswith("roomy")]
    assert roomy_series["scope"] == "key" and roomy_series["period"] == "month"
    ratio = metrics.value("gateway_budget_utilization_ratio", name=roomy_series["name"])
    assert ratio == pytest.approx(float(spent / Decimal("1.00")))


def test_usage_stream_backlog(openai_route: dict[str, Any], openai_for: Any, gateway_url: str) -> None:
    openai_for(openai_route["secret"]).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    metrics = scrape(gateway_url)
    assert metrics.value("gateway_usage_stream_length") == 1  # nothing drains it in this test
    assert metrics.value("gateway_usage_consumer_lag_entries") == 1
    assert metrics.value("gateway_usage_consumer_lag_seconds") >= 0

    from usage.consumer import drain

    drain()
    metrics = scrape(gateway_url)
    assert metrics.value("gateway_usage_stream_length") == 0
    assert metrics.value("gateway_usage_consumer_lag_seconds") == 0
    assert metrics.value("gateway_usage_stream_pending") == 0


def test_metrics_need_the_token_outside_the_allowed_networks(client: Any, settings: Any) -> None:
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    settings.GATEWAY = {**settings.GATEWAY, "METRICS_NETWORKS": [], "METRICS_TOKEN": "s3cret-token"}
    refused = client.get("/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_forbidden"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    settings.GATEWAY = {**settings.GATEWAY, "METRICS_NETWORKS": ["10.0.0.0/8"], "METRICS_TOKEN": ""}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403


def test_every_catalogued_metric_is_exported(client: Any, redis_client: Any) -> None:
    from monitoring import catalog

    exported = {family.name for family in _families(client.get("/metrics").content.decode())}
    for metric in catalog.ALL:
        if metric is catalog.DEAD_LETTERS:
            continue  # only when the build has dead letters
        name = metric.name.removesuffix("_total") if metric.kind == "counter" else metric.name
        assert name in exported, metric.name


def _families(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


def test_every_metric_is_documented() -> None:
    from pathlib import Path

    from monitoring import catalog

    text = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    for metric in catalog.ALL:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "–"
        assert f"| `{metric.name}` | {metric.kind} | {labels} |" in text, metric.name
