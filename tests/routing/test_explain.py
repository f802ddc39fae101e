"""``POST /v1/routing/explain`` and the admin rule tester: the plan, without calling a provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o"


@pytest.fixture
def setup(
    fake_openai: FakeOpenAI,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    issue_key: Any,
    gateway_url: str,
    redis_client: Any,
) -> dict[str, Any]:
    """Three deployments of one model on one loopback upstream: dear (priority 1), cheap, unpriced."""
    upstream = make_provider("up", base_url=fake_openai.url + "/v1", vendor="openai")
    other = make_provider("other", base_url=fake_openai.url + "/v1", vendor="othervendor")
    deps = {
        "dear": make_deployment(upstream, MODEL, name="dear", provider_model="gpt-4o", priority=1, weight=2),
        "cheap": make_deployment(upstream, MODEL, name="cheap", provider_model="gpt-4o-mini", priority=2),
        "unpriced": make_deployment(other, MODEL, name="unpriced", provider_model="mystery", priority=0),
    }
    make_price("openai", "gpt-4o", "2.50", "10.00")
    make_price("openai", "gpt-4o-mini", "0.15", "0.60")
    key, secret = issue_key()
    return {"url": gateway_url, "secret": secret, "key": key, "fake": fake_openai, "deps": deps}


def set_strategy(name: str, **fields: Any) -> None:
    from routing.models import RoutingSettings

    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": name, **fields})


def explain(setup: dict[str, Any], body: dict[str, Any] | None = None, **headers: str) -> requests.Response:
    payload = body or {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 100}
    return requests.post(
        setup["url"] + "/v1/routing/explain",
        json=payload,
        headers={"Authorization": f"Bearer {setup['secret']}", **headers},
        timeout=10,
    )


def test_explain_cost(setup: dict[str, Any]) -> None:
    set_strategy("cost")
    response = explain(setup)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "routing.explain"
    assert (result["strategy"], result["strategy_source"], result["reason"]) == ("cost", "gateway", "cheapest")
    assert result["chosen"] == "cheap"
    assert [c["deployment"] for c in result["candidates"]] == ["cheap", "dear", "unpriced"]
    tokens = result["tokens"]
    assert tokens["expected_output"] == 100 and tokens["input"] > 0 and tokens["tokenizer"].startswith("tiktoken/")
    cheap, dear, unpriced = result["candidates"]
    expected = (tokens["input"] * Decimal("0.15") + 100 * Decimal("0.60")) / 1_000_000
    assert Decimal(cheap["estimated_cost_usd"]) == expected
    assert Decimal(dear["estimated_cost_usd"]) > Decimal(cheap["estimated_cost_usd"])
    assert unpriced["estimated_cost_usd"] is None  # unknown, never zero
    assert (dear["weight"], dear["priority"], dear["rank"], dear["will_try"]) == (2, 1, 2, True)
    assert cheap["score"]["estimated_cost_usd"] == cheap["estimated_cost_usd"]
    assert cheap["provider"] == "up" and cheap["provider_model"] == "gpt-4o-mini"
    assert "latency_ms" in cheap and "latency_samples" in cheap
    assert result["rule"] is None and result["rules"] is None and result["excluded"] == []
    assert result["max_attempts"] == 3
    assert setup["fake"].received == []  # no provider was called


def test_explain_model_strategy_and_max_attempts(setup: dict[str, Any]) -> None:
    set_strategy("model", max_attempts=2)
    result = explain(setup).json()
    assert [c["deployment"] for c in result["candidates"]] == ["unpriced", "dear", "cheap"]
    assert [c["will_try"] for c in result["candidates"]] == [True, True, False]
    assert result["reason"] == "priority"


def test_explain_does_not_move_the_round_robin(setup: dict[str, Any]) -> None:
    set_strategy("balanced")
    first = explain(setup).json()["chosen"]
    assert [explain(setup).json()["chosen"] for _ in range(4)] == [first] * 4
    served = requests.post(
        setup["url"] + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {setup['secret']}"},
        timeout=10,
    )
    assert served.headers["x-gateway-deployment"] == first  # explain told the truth
    after = explain(setup).json()
    assert after["chosen"] != first  # the real request moved the cycle on
    assert after["candidates"][0]["score"]["share"] == pytest.approx(0.5 if after["chosen"] == "dear" else 0.25)


def test_explain_custom_rule(setup: dict[str, Any]) -> None:
    from routing.models import RoutingRule, RuleTarget

    set_strategy("custom")
    gold = RoutingRule.objects.create(name="gold", priority=10, header_name="x-tier", header_value="gold")
    RuleTarget.objects.create(rule=gold, deployment=setup["deps"]["dear"], position=0)
    RoutingRule.objects.create(name="long", priority=20, min_input_tokens=100_000, action="strategy", strategy="cost")
    result = explain(setup, **{"X-Tier": "gold"}).json()
    assert result["reason"] == "rule:gold" and result["chosen"] == "dear"
    assert result["rule"]["name"] == "gold" and result["rule"]["targets"] == ["dear"]
    assert [c["deployment"] for c in result["candidates"]] == ["dear"]
    assert {e["deployment"]: e["reason"] for e in result["excluded"]} == {
        "cheap": "not_in_rule",
        "unpriced": "not_in_rule",
    }
    assert [(r["name"], r["matched"], r["applied"]) for r in result["rules"]] == [
        ("gold", True, True),
        ("long", False, False),
    ]
    plain = explain(setup).json()
    assert plain["reason"] == "no-rule-matched" and plain["rule"] is None
    assert [(r["name"], r["failed_condition"]) for r in plain["rules"]] == [
        ("gold", "header"),
        ("long", "input_tokens"),
    ]


def test_explain_shows_cooling_deployments(setup: dict[str, Any]) -> None:
    from routing.cooldowns import cooldowns

    set_strategy("model")
    cooldowns.failure("unpriced", threshold=1, cooldown_seconds=60)
    result = explain(setup).json()
    assert result["chosen"] == "dear"
    assert result["excluded"] == [{"deployment": "unpriced", "provider": "other", "reason": "cooling_down"}]


def test_explain_honours_the_strategy_header_and_the_key(setup: dict[str, Any], issue_key: Any) -> None:
    set_strategy("model", allow_request_strategy=True)
    result = explain(setup, **{"x-gateway-strategy": "cost"}).json()
    assert (result["strategy"], result["strategy_source"], result["reason"]) == ("cost", "request", "request:cheapest")
    _, balanced_key = issue_key("balanced-key", strategy="balanced")
    response = requests.post(
        setup["url"] + "/v1/routing/explain",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {balanced_key}"},
        timeout=10,
    )
    assert (response.json()["strategy"], response.json()["strategy_source"]) == ("balanced", "key")


def test_explain_errors(setup: dict[str, Any], issue_key: Any) -> None:
    unknown = explain(setup, {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert explain(setup, {"model": MODEL, "messages": []}).status_code == 400
    _, limited = issue_key("limited", allowed_models=["other"])
    forbidden = requests.post(
        setup["url"] + "/v1/routing/explain",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {limited}"},
        timeout=10,
    )
    assert forbidden.status_code == 403
    anonymous = requests.post(setup["url"] + "/v1/routing/explain", json={"model": MODEL}, timeout=10)
    assert anonymous.status_code == 401
    bad_json = requests.post(
        setup["url"] + "/v1/routing/explain",
        data=b"{oops",
        headers={"Authorization": f"Bearer {setup['secret']}"},
        timeout=10,
    )
    assert bad_json.status_code == 400
    set_strategy("model", allow_request_strategy=True)
    assert explain(setup, **{"x-gateway-strategy": "fastest"}).status_code == 400


# --- the admin rule tester ---------------------------------------------------------


@pytest.fixture
def admin(client: Any) -> Any:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-123"))
    return client


def test_rule_tester_page(setup: dict[str, Any], admin: Any) -> None:
    from routing.models import RoutingRule, RuleTarget

    gold = RoutingRule.objects.create(name="gold", priority=10, metadata_key="tier", metadata_value="gold")
    RuleTarget.objects.create(rule=gold, deployment=setup["deps"]["cheap"], position=0)
    url = "/admin/routing/routingrule/tester/"
    page = admin.get(url)
    assert page.status_code == 200 and b"Rule tester" in page.content
    body = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "metadata": {"tier": "gold"}}'
    response = admin.post(url, {"key": setup["key"].pk, "body": body, "headers": "", "strategy": "custom"})
    assert response.status_code == 200
    result = response.context["result"]
    assert result["chosen"] == "cheap" and result["reason"] == "request:rule:gold"
    assert b'id="tester-chosen">cheap<' in response.content
    assert b"applied" in response.content
    assert setup["fake"].received == []

    silver = body.replace("gold", "silver")
    result = admin.post(url, {"key": setup["key"].pk, "body": silver, "strategy": "custom"}).context["result"]
    assert result["reason"] == "request:no-rule-matched"
    result = admin.post(url, {"key": setup["key"].pk, "body": body, "strategy": ""}).context["result"]
    assert result["strategy"] == "model" and result["strategy_source"] == "gateway"

    unknown = admin.post(url, {"key": setup["key"].pk, "body": body.replace("gpt-4o", "nope"), "strategy": ""})
    assert unknown.context["result"] is None and "does not exist" in unknown.context["error"]
    invalid = admin.post(url, {"key": setup["key"].pk, "body": "{not json", "strategy": ""})
    assert "body" in invalid.context["form"].errors
    header_rule = RoutingRule.objects.create(name="hdr", priority=5, header_name="X-Team", header_value="ml")
    RuleTarget.objects.create(rule=header_rule, deployment=setup["deps"]["dear"], position=0)
    with_header = admin.post(
        url, {"key": setup["key"].pk, "body": body, "headers": "X-Team: ml", "strategy": "custom"}
    ).context["result"]
    assert with_header["chosen"] == "dear"
