"""The custom strategy: rule conditions, priority, actions; rules from the database; the admin form."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from routing.config.snapshot import RoutingSettingsInfo, load_snapshot
from routing.strategies.custom import NO_RULE_REASON, CustomStrategy, check_rules, rule_mismatch
from tests.routing.builders import deployment, key, price, route, rule, snapshot

A, B, C = deployment("a", priority=1), deployment("b", priority=2), deployment("c", priority=3)
DEPS = [A, B, C]


def choose(rules: tuple[Any, ...], deps: list[Any] = DEPS, **request: Any) -> Any:
    snap = snapshot(deps + [deployment("other-model", "mini")], rules=rules, prices={"c": [price("0.1", "0.1")]})
    return CustomStrategy().choose(route(snap, **request), deps)


def names(ranking: Any) -> list[str]:
    return [d.name for d in ranking.candidates]


# --- conditions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "request_fields", "matches"),
    [
        ({}, {}, True),
        ({"model_pattern": "gpt-4o"}, {}, True),
        ({"model_pattern": "gpt-4*"}, {}, True),
        ({"model_pattern": "gpt-3*"}, {}, False),
        ({"model_pattern": "GPT-4o"}, {}, False),  # case-sensitive, like model names
        ({"client_key_id": 7}, {"client": key(7)}, True),
        ({"client_key_id": 7}, {"client": key(8)}, False),
        ({"team_id": 3}, {"client": key(8, team_id=3)}, True),
        ({"team_id": 3}, {"client": key(8, team_id=4)}, False),
        ({"team_id": 3}, {"client": key(8)}, False),
        ({"header_name": "x-tier"}, {"headers": {"x-tier": "anything"}}, True),
        ({"header_name": "x-tier"}, {}, False),
        ({"header_name": "x-tier", "header_value": "gold*"}, {"headers": {"x-tier": "gold-plus"}}, True),
        ({"header_name": "x-tier", "header_value": "gold*"}, {"headers": {"x-tier": "silver"}}, False),
        ({"metadata_key": "tier"}, {"metadata": {"tier": "gold"}}, True),
        ({"metadata_key": "tier"}, {"metadata": {"other": "gold"}}, False),
        ({"metadata_key": "tier", "metadata_value": "g?ld"}, {"metadata": {"tier": "gold"}}, True),
        ({"metadata_key": "tier", "metadata_value": "gold"}, {"metadata": {"tier": "silver"}}, False),
        ({"metadata_key": "beta", "metadata_value": "true"}, {"metadata": {"beta": True}}, True),
        ({"metadata_key": "tier"}, {}, False),
        ({"stream": True}, {"stream": True}, True),
        ({"stream": True}, {}, False),
        ({"stream": False}, {}, True),
        ({"stream": False}, {"stream": True}, False),
        ({"min_input_tokens": 1000}, {"content": "word " * 2000}, True),
        ({"min_input_tokens": 1000}, {"content": "short"}, False),
        ({"max_input_tokens": 100}, {"content": "short"}, True),
        ({"max_input_tokens": 100}, {"content": "word " * 2000}, False),
        ({"min_input_tokens": 5, "max_input_tokens": 50}, {"content": "just a few words here"}, True),
    ],
)
def test_conditions(fields: dict[str, Any], request_fields: dict[str, Any], matches: bool) -> None:
    snap = snapshot(DEPS)
    assert (rule_mismatch(rule("r", 1, targets=("c",), **fields), route(snap, **request_fields)) is None) is matches


def test_all_conditions_of_a_rule_must_hold() -> None:
    r = rule("r", 1, model_pattern="gpt-4*", header_name="x-tier", header_value="gold", stream=True)
    snap = snapshot(DEPS)
    assert rule_mismatch(r, route(snap, headers={"x-tier": "gold"}, stream=True)) is None
    assert rule_mismatch(r, route(snap, headers={"x-tier": "gold"})) == "stream"
    assert rule_mismatch(r, route(snap, stream=True)) == "header"


def test_input_tokens_are_counted_only_when_a_rule_needs_them() -> None:
    snap = snapshot(DEPS, rules=(rule("by-model", 1, model_pattern="gpt-4o", targets=("c",)),))
    request = route(snap)
    CustomStrategy().choose(request, DEPS)
    assert request._input_tokens is None
    snap = snapshot(DEPS, rules=(rule("big", 1, min_input_tokens=10, targets=("c",)),))
    request = route(snap)
    CustomStrategy().choose(request, DEPS)
    assert request._input_tokens is not None


# --- priority and actions ----------------------------------------------------------


def test_the_lowest_priority_matching_rule_wins() -> None:
    rules = (
        rule("catch-all", 100, targets=("a",)),
        rule("gold", 10, header_name="x-tier", header_value="gold", targets=("c",)),
        rule("silver", 20, header_name="x-tier", targets=("b",)),
    )
    ranking = choose(rules, headers={"x-tier": "gold"})
    assert (names(ranking), ranking.reason, ranking.rule.name) == (["c"], "rule:gold", "gold")
    assert choose(rules, headers={"x-tier": "bronze"}).reason == "rule:silver"
    assert choose(rules).reason == "rule:catch-all"
    assert choose(rules).strategy == "custom"


def test_route_action_keeps_the_rule_order() -> None:
    ranking = choose((rule("pinned", 1, targets=("c", "a")),))
    assert names(ranking) == ["c", "a"]
    assert ranking.scores == {"c": {"position": 0}, "a": {"position": 1}}


def test_route_action_skips_targets_that_are_not_candidates() -> None:
    # "other-model" serves another model; "b" is cooling down (not among the candidates)
    ranking = choose((rule("r", 1, targets=("other-model", "b", "c")),), deps=[A, C])
    assert names(ranking) == ["c"]


def test_a_rule_without_usable_targets_does_not_apply() -> None:
    rules = (rule("dead", 1, targets=("other-model", "b")), rule("next", 2, targets=("a",)))
    ranking = choose(rules, deps=[A, C])
    assert (ranking.reason, names(ranking)) == ("rule:next", ["a"])


def test_strategy_action_applies_a_strategy_to_the_listed_deployments() -> None:
    ranking = choose((rule("cheap", 1, action="strategy", strategy="cost", targets=("a", "c")),))
    assert names(ranking) == ["c", "a"]  # c is the only priced one
    assert ranking.reason == "rule:cheap" and ranking.rule.strategy == "cost"
    assert "estimated_cost_usd" in ranking.scores["c"]


def test_strategy_action_without_targets_uses_every_candidate() -> None:
    ranking = choose((rule("cheap", 1, action="strategy", strategy="cost"),))
    assert names(ranking) == ["c", "a", "b"]


def test_strategy_action_with_balanced_rotates() -> None:
    rules = (rule("spread", 1, action="strategy", strategy="balanced", targets=("a", "b")),)
    snap = snapshot(DEPS, rules=rules)
    strategy = CustomStrategy()
    firsts = [strategy.choose(route(snap, "gpt-4o"), DEPS).candidates[0].name for _ in range(4)]
    assert sorted(firsts) == ["a", "a", "b", "b"]


def test_explain_through_a_balanced_rule_does_not_advance_it() -> None:
    rules = (rule("spread", 1, action="strategy", strategy="balanced", targets=("a", "b")),)
    snap = snapshot(DEPS, rules=rules)
    strategy = CustomStrategy()
    dry = route(snap)
    dry.dry_run = True
    previews = {strategy.choose(dry, DEPS).candidates[0].name for _ in range(3)}
    assert len(previews) == 1
    assert strategy.choose(route(snap), DEPS).candidates[0].name in previews


def test_no_match_falls_back_to_the_model_strategy() -> None:
    ranking = choose((rule("gold", 1, header_name="x-tier", header_value="gold", targets=("c",)),))
    assert names(ranking) == ["a", "b", "c"]
    assert ranking.reason == NO_RULE_REASON and ranking.rule is None
    assert choose(()).reason == NO_RULE_REASON


def test_check_rules_reports_every_rule() -> None:
    rules = (
        rule("gold", 1, header_name="x-tier", header_value="gold", targets=("c",)),
        rule("dead", 2, targets=("other-model",)),
        rule("all", 3, targets=("a",)),
        rule("later", 4, targets=("b",)),
    )
    snap = snapshot(DEPS, rules=rules)
    checks = [c.as_dict() for c in check_rules(route(snap), DEPS)]
    assert [(c["name"], c["matched"], c["failed_condition"], c["applied"]) for c in checks] == [
        ("gold", False, "header", False),
        ("dead", True, None, False),
        ("all", True, None, True),
        ("later", True, None, False),
    ]


# --- rules from the database -------------------------------------------------------


@pytest.fixture
def deployments(make_provider: Any, make_deployment: Any) -> dict[str, Any]:
    provider = make_provider("mockp", kind="mock")
    return {n: make_deployment(provider, "gpt-4o", name=n) for n in ("a", "b", "c")}


@pytest.mark.django_db
def test_rules_load_enabled_by_priority_with_targets_by_position(deployments: dict[str, Any]) -> None:
    from routing.models import RoutingRule, RuleTarget

    second = RoutingRule.objects.create(name="second", priority=20, model_pattern="gpt-*")
    first = RoutingRule.objects.create(name="first", priority=10, header_name="X-Tier", header_value="gold")
    RoutingRule.objects.create(name="off", priority=5, enabled=False)
    RuleTarget.objects.create(rule=first, deployment=deployments["a"], position=2)
    RuleTarget.objects.create(rule=first, deployment=deployments["c"], position=1)
    RuleTarget.objects.create(rule=second, deployment=deployments["b"], position=0)
    snap = load_snapshot(1)
    assert [r.name for r in snap.rules] == ["first", "second"]
    assert snap.rules[0].targets == ("c", "a")
    assert snap.rules[0].header_name == "x-tier"  # header names compare lower-case
    ranking = CustomStrategy().choose(route(snap, headers={"x-tier": "gold"}), snap.deployments_for("gpt-4o"))
    assert (ranking.reason, names(ranking)) == ("rule:first", ["c", "a"])


@pytest.mark.django_db
def test_two_rules_cannot_share_a_priority() -> None:
    from django.db import IntegrityError, transaction

    from routing.models import RoutingRule

    RoutingRule.objects.create(name="one", priority=10)
    with pytest.raises(IntegrityError), transaction.atomic():
        RoutingRule.objects.create(name="two", priority=10)


# --- the admin form ----------------------------------------------------------------


@pytest.fixture
def admin_client_logged(db: None, client: Any) -> Any:
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return client


def rule_post(deployment_id: int | None, **fields: Any) -> dict[str, Any]:
    data = {
        "name": "gold",
        "priority": "10",
        "enabled": "on",
        "description": "",
        "model_pattern": "gpt-4*",
        "header_name": "",
        "header_value": "",
        "metadata_key": "",
        "metadata_value": "",
        "stream": "unknown",
        "action": "route",
        "strategy": "",
        "targets-TOTAL_FORMS": "1",
        "targets-INITIAL_FORMS": "0",
        "targets-MIN_NUM_FORMS": "0",
        "targets-MAX_NUM_FORMS": "1000",
        "targets-0-position": "0",
        "targets-0-deployment": str(deployment_id) if deployment_id else "",
    }
    data.update({k: str(v) for k, v in fields.items()})
    return data


@pytest.mark.django_db
def test_admin_creates_a_rule_with_ordered_targets(admin_client_logged: Any, deployments: dict[str, Any]) -> None:
    from routing.models import RoutingRule

    data = rule_post(deployments["c"].id, **{"targets-TOTAL_FORMS": 2, "targets-1-position": 1})
    data["targets-1-deployment"] = str(deployments["a"].id)
    response = admin_client_logged.post("/admin/routing/routingrule/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = RoutingRule.objects.get(name="gold")
    assert [t.deployment.name for t in saved.targets.order_by("position")] == ["c", "a"]
    listing = admin_client_logged.get("/admin/routing/routingrule/")
    assert b"c \xe2\x86\x92 a" in listing.content  # "c → a"
    assert b"Rule tester" in listing.content


@pytest.mark.django_db
def test_admin_rejects_a_conflicting_priority_clearly(admin_client_logged: Any, deployments: dict[str, Any]) -> None:
    from routing.models import RoutingRule

    RoutingRule.objects.create(name="existing", priority=10)
    response = admin_client_logged.post("/admin/routing/routingrule/add/", rule_post(deployments["a"].id))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "priority" in errors
    assert "Priority 10 is already used by the rule 'existing'" in errors["priority"][0]
    assert RoutingRule.objects.count() == 1
    # editing a rule and keeping its own priority is fine
    existing = RoutingRule.objects.get(name="existing")
    data = rule_post(deployments["a"].id, name="existing")
    response = admin_client_logged.post(f"/admin/routing/routingrule/{existing.pk}/change/", data)
    assert response.status_code == 302


@pytest.mark.django_db
def test_admin_validates_actions(admin_client_logged: Any, deployments: dict[str, Any]) -> None:
    response = admin_client_logged.post("/admin/routing/routingrule/add/", rule_post(None))
    assert b"needs at least one deployment" in response.content
    response = admin_client_logged.post("/admin/routing/routingrule/add/", rule_post(None, action="strategy"))
    assert "strategy" in response.context["adminform"].form.errors
    response = admin_client_logged.post(
        "/admin/routing/routingrule/add/", rule_post(None, action="strategy", strategy="custom")
    )
    assert "strategy" in response.context["adminform"].form.errors  # a rule cannot recurse into custom
    response = admin_client_logged.post(
        "/admin/routing/routingrule/add/", rule_post(None, action="strategy", strategy="cost")
    )
    assert response.status_code == 302
    response = admin_client_logged.post(
        "/admin/routing/routingrule/add/", rule_post(deployments["a"].id, name="two\nlines", priority=11)
    )
    assert "name" in response.context["adminform"].form.errors  # it would break the reason header


@pytest.mark.django_db
def test_admin_routing_settings_is_a_single_row(admin_client_logged: Any) -> None:
    from routing.models import RoutingSettings

    response = admin_client_logged.get("/admin/routing/routingsettings/")
    assert response.status_code == 302 and response.url.endswith("/admin/routing/routingsettings/1/change/")
    page = admin_client_logged.get(response.url)
    assert b'<option value="balanced"' in page.content
    data = {
        "strategy": "custom",
        "allow_request_strategy": "on",
        "max_attempts": "2",
        "cooldown_failures": "3",
        "cooldown_seconds": "30",
        "slo_min_samples": "10",
        "slo_explore_percent": "2",
        "hedge_budget_percent": "10",
        "outlier_interval_seconds": "10",
        "outlier_consecutive_5xx": "5",
        "outlier_base_ejection_seconds": "30",
        "outlier_max_ejection_seconds": "300",
        "outlier_max_ejection_percent": "10",
        "outlier_success_rate_stdev_factor": "1.9",
        "outlier_failure_percentage_threshold": "85",
        "outlier_latency_factor": "0",
        "outlier_minimum_hosts": "5",
        "outlier_request_volume": "100",
    }
    assert b"In flight (all processes)" in page.content  # outlier ejections, in-flight counts, hedge budget
    assert admin_client_logged.post(response.url, data).status_code == 302
    assert RoutingSettings.objects.get(pk=1).strategy == "custom"
    assert admin_client_logged.post(response.url, {**data, "strategy": "fastest"}).status_code == 200
    assert RoutingSettings.objects.get(pk=1).strategy == "custom"


# --- end to end: the rule decides, the headers say so ------------------------------


@pytest.mark.django_db(transaction=True)
def test_rules_route_live_requests(
    make_provider: Any, make_deployment: Any, issue_key: Any, gateway_url: str, redis_client: Any
) -> None:
    from routing.models import RoutingRule, RoutingSettings, RuleTarget

    provider = make_provider("mockp", kind="mock")
    deps = {n: make_deployment(provider, "gpt-4o", name=n, priority=i) for i, n in enumerate(("a", "b", "c"))}
    gold = RoutingRule.objects.create(name="gold-tier", priority=10, metadata_key="tier", metadata_value="gold")
    RuleTarget.objects.create(rule=gold, deployment=deps["c"], position=0)
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "custom"})
    _, secret = issue_key()

    def send(**extra: Any) -> requests.Response:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], **extra}
        response = requests.post(
            gateway_url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 200, response.text
        return response

    gold_response = send(metadata={"tier": "gold"})
    assert gold_response.headers["x-gateway-deployment"] == "c"
    assert gold_response.headers["x-gateway-strategy"] == "custom"
    assert gold_response.headers["x-gateway-route-reason"] == "rule:gold-tier"
    assert gold_response.headers["x-gateway-attempts"] == "1"
    plain = send(metadata={"tier": "silver"})
    assert plain.headers["x-gateway-deployment"] == "a"
    assert plain.headers["x-gateway-route-reason"] == NO_RULE_REASON


def test_custom_strategy_settings_default_is_model() -> None:
    assert RoutingSettingsInfo().strategy == "model"
