"""Each strategy's choice and order, on snapshots built in memory; strategy precedence."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gatewaysite.api.errors import InvalidRequest
from routing.config.snapshot import RoutingSettingsInfo
from routing.services.planning import plan_route, strategy_for
from routing.strategies.balanced import BalancedStrategy
from routing.strategies.base import Strategy
from routing.strategies.cost import CostStrategy
from routing.strategies.model import ModelStrategy
from routing.strategies.registry import STRATEGY_CLASSES, get_strategy, strategy_names
from tests.routing.builders import deployment, key, price, route, snapshot
from usage.latency.live import live_latency


def names(ranking: Any) -> list[str]:
    return [d.name for d in ranking.candidates]


# --- registry ----------------------------------------------------------------------


def test_registry_names_the_seed_strategies() -> None:
    assert {"model", "balanced", "cost", "custom"} <= set(strategy_names())
    assert len(strategy_names()) == len(STRATEGY_CLASSES)  # names are unique
    for name in strategy_names():
        assert isinstance(get_strategy(name), Strategy)
        assert get_strategy(name).name == name


# --- model -------------------------------------------------------------------------


def test_model_orders_by_priority_then_name() -> None:
    deps = [deployment("c", priority=5), deployment("b", priority=1), deployment("a", priority=5)]
    ranking = ModelStrategy().choose(route(snapshot(deps)), deps)
    assert names(ranking) == ["b", "a", "c"]
    assert ranking.reason == "priority"
    assert ranking.scores["b"] == {"priority": 1}


# --- balanced ----------------------------------------------------------------------


def picks(strategy: BalancedStrategy, request: Any, deps: list[Any], count: int) -> list[str]:
    return [strategy.choose(request, deps).candidates[0].name for _ in range(count)]


def test_balanced_cycles_evenly() -> None:
    deps = [deployment("a"), deployment("b"), deployment("c")]
    strategy = BalancedStrategy()
    request = route(snapshot(deps))
    assert picks(strategy, request, deps, 6) == ["a", "b", "c", "a", "b", "c"]
    assert Counter(picks(strategy, request, deps, 3000)) == {"a": 1000, "b": 1000, "c": 1000}


def test_balanced_is_smooth_and_respects_weights() -> None:
    deps = [deployment("a", weight=5), deployment("b", weight=1), deployment("c", weight=1)]
    strategy = BalancedStrategy()
    request = route(snapshot(deps))
    # nginx's smooth weighted round-robin: the heavy one is spread out, not bunched
    assert picks(strategy, request, deps, 7) == ["a", "a", "b", "a", "c", "a", "a"]
    assert Counter(picks(strategy, request, deps, 700)) == {"a": 500, "b": 100, "c": 100}


def test_balanced_fallback_order_is_the_next_picks() -> None:
    deps = [deployment("a"), deployment("b"), deployment("c")]
    strategy = BalancedStrategy()
    request = route(snapshot(deps))
    assert names(strategy.choose(request, deps)) == ["a", "b", "c"]
    assert names(strategy.choose(request, deps)) == ["b", "c", "a"]
    ranking = strategy.choose(request, deps)
    assert names(ranking) == ["c", "a", "b"]
    assert ranking.reason == "round-robin"
    assert ranking.scores["a"]["weight"] == 1 and ranking.scores["a"]["share"] == pytest.approx(0.3333)


def test_balanced_is_model_aware() -> None:
    four = [deployment("a"), deployment("b")]
    mini = [deployment("x", "mini"), deployment("y", "mini"), deployment("z", "mini")]
    snap = snapshot(four + mini)
    strategy = BalancedStrategy()
    seen = []
    for _ in range(6):
        seen.append(strategy.choose(route(snap, "gpt-4o"), four).candidates[0].name)
        seen.append(strategy.choose(route(snap, "mini"), mini).candidates[0].name)
    assert Counter(seen) == {"a": 3, "b": 3, "x": 2, "y": 2, "z": 2}


def test_balanced_cycles_past_an_unavailable_deployment_and_resumes() -> None:
    deps = [deployment("a"), deployment("b"), deployment("c")]
    strategy = BalancedStrategy()
    request = route(snapshot(deps))
    assert picks(strategy, request, deps, 2) == ["a", "b"]
    without_b = [deps[0], deps[2]]  # b disabled or cooling down: plan_route passes the others
    assert Counter(picks(strategy, request, without_b, 10)) == {"a": 5, "c": 5}
    assert picks(strategy, request, deps, 1) == ["c"]  # the full cycle resumes where it was


def test_balanced_weight_change_starts_a_new_cycle() -> None:
    strategy = BalancedStrategy()
    deps = [deployment("a"), deployment("b")]
    request = route(snapshot(deps))
    picks(strategy, request, deps, 1)
    heavier = [deployment("a", weight=3), deployment("b")]
    assert Counter(picks(strategy, request, heavier, 400)) == {"a": 300, "b": 100}


def test_balanced_dry_run_does_not_advance() -> None:
    deps = [deployment("a"), deployment("b"), deployment("c")]
    strategy = BalancedStrategy()
    request = route(snapshot(deps))
    picks(strategy, request, deps, 1)
    request.dry_run = True
    assert picks(strategy, request, deps, 5) == ["b"] * 5
    request.dry_run = False
    assert picks(strategy, request, deps, 3) == ["b", "c", "a"]


def test_balanced_single_deployment_and_zero_weights() -> None:
    strategy = BalancedStrategy()
    one = [deployment("a")]
    assert picks(strategy, route(snapshot(one)), one, 3) == ["a", "a", "a"]
    zero = [deployment("a", weight=0), deployment("b", weight=0)]
    assert Counter(picks(strategy, route(snapshot(zero)), zero, 4)) == {"a": 2, "b": 2}
    drained = [deployment("a", weight=0), deployment("b", weight=2)]
    ranking = strategy.choose(route(snapshot(drained)), drained)
    assert names(ranking) == ["b", "a"]  # weight 0: never first, still a fallback


# --- cost --------------------------------------------------------------------------


@pytest.fixture
def latency_stats(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[float, int]]:
    stats: dict[str, tuple[float, int]] = {}
    monkeypatch.setattr(live_latency, "stats", lambda: dict(stats))
    return stats


def test_cost_prefers_the_cheapest_for_this_request(latency_stats: dict[str, tuple[float, int]]) -> None:
    # cheap input / dear output vs. the reverse: which is cheaper depends on the request
    deps = [deployment("reader"), deployment("writer")]
    prices = {"reader": [price("0.10", "10.00")], "writer": [price("5.00", "0.50")]}
    snap = snapshot(deps, prices=prices)
    strategy = CostStrategy()
    long_prompt = "word " * 2000
    assert names(strategy.choose(route(snap, content=long_prompt, max_tokens=10), deps)) == ["reader", "writer"]
    assert names(strategy.choose(route(snap, content="Hi", max_tokens=4000), deps)) == ["writer", "reader"]


def test_cost_scores_are_exact_estimates(latency_stats: dict[str, tuple[float, int]]) -> None:
    deps = [deployment("a"), deployment("b")]
    snap = snapshot(deps, prices={"a": [price("2.50", "10.00")], "b": [price("0.15", "0.60")]})
    request = route(snap, max_tokens=100)
    tokens, _ = request.input_tokens()
    ranking = CostStrategy().choose(request, deps)
    assert names(ranking) == ["b", "a"]
    expected = (Decimal(tokens) * Decimal("0.15") + 100 * Decimal("0.60")) / Decimal(1_000_000)
    assert Decimal(ranking.scores["b"]["estimated_cost_usd"]) == expected
    assert ranking.reason == "cheapest"


def test_cost_unpriced_deployment_ranks_last(latency_stats: dict[str, tuple[float, int]]) -> None:
    deps = [deployment("free-looking", priority=1), deployment("dear", priority=9), deployment("cheap", priority=9)]
    snap = snapshot(deps, prices={"dear": [price("30", "60")], "cheap": [price("0.1", "0.2")]})
    ranking = CostStrategy().choose(route(snap), deps)
    assert names(ranking) == ["cheap", "dear", "free-looking"]
    assert ranking.scores["free-looking"]["estimated_cost_usd"] is None


def test_cost_uses_the_price_in_effect_now(latency_stats: dict[str, tuple[float, int]]) -> None:
    future = datetime.now(UTC) + timedelta(days=30)
    deps = [deployment("a"), deployment("b")]
    prices = {
        "a": [price("0.01", "0.01", id=2, effective_from=future), price("9", "9", id=1)],  # cheaper only next month
        "b": [price("1", "1")],
    }
    assert names(CostStrategy().choose(route(snapshot(deps, prices=prices)), deps)) == ["b", "a"]


def test_cost_ties_go_to_lower_latency_then_priority(latency_stats: dict[str, tuple[float, int]]) -> None:
    deps = [
        deployment("slow", priority=1),
        deployment("fast", priority=5),
        deployment("unmeasured", priority=0),
        deployment("also-unmeasured", priority=3),
    ]
    same = [price("1", "1")]
    snap = snapshot(deps, prices={d.name: same for d in deps})
    latency_stats.update({"slow": (900.0, 20), "fast": (120.0, 20)})
    ranking = CostStrategy().choose(route(snap), deps)
    assert names(ranking) == ["fast", "slow", "unmeasured", "also-unmeasured"]
    assert ranking.scores["fast"]["latency_ms"] == 120.0
    assert ranking.scores["unmeasured"]["latency_ms"] is None


# --- which strategy is in force ----------------------------------------------------


def test_strategy_precedence_request_header_then_key_then_gateway() -> None:
    deps = [deployment("a"), deployment("b")]
    allowed = snapshot(deps, settings=RoutingSettingsInfo(strategy="cost", allow_request_strategy=True))
    header = {"x-gateway-strategy": "balanced"}
    assert strategy_for(route(allowed, client=key(strategy="model"), headers=header)) == ("balanced", "request")
    assert strategy_for(route(allowed, client=key(strategy="model"))) == ("model", "key")
    assert strategy_for(route(allowed)) == ("cost", "gateway")

    closed = snapshot(deps, settings=RoutingSettingsInfo(strategy="cost", allow_request_strategy=False))
    assert strategy_for(route(closed, headers=header)) == ("cost", "gateway")  # the header is ignored
    assert strategy_for(route(closed, client=key(strategy="balanced"), headers=header)) == ("balanced", "key")


def test_unknown_strategy_header_is_a_400_naming_the_valid_ones() -> None:
    snap = snapshot([deployment("a")], settings=RoutingSettingsInfo(allow_request_strategy=True))
    with pytest.raises(InvalidRequest) as info:
        strategy_for(route(snap, headers={"x-gateway-strategy": "fastest"}))
    assert "balanced" in str(info.value.detail) and "cost" in str(info.value.detail)


def test_plan_route_names_the_strategy_and_its_source() -> None:
    deps = [deployment("a", priority=2), deployment("b", priority=1)]
    snap = snapshot(deps, settings=RoutingSettingsInfo(strategy="model", allow_request_strategy=True))
    ranking = plan_route(route(snap, client=key(strategy="balanced")))
    assert ranking.strategy == "balanced" and ranking.reason == "key:round-robin"
    ranking = plan_route(route(snap, headers={"x-gateway-strategy": "model"}))
    assert ranking.strategy == "model" and ranking.reason == "request:priority"
    ranking = plan_route(route(snap))
    assert (ranking.strategy, ranking.reason, names(ranking)) == ("model", "priority", ["b", "a"])
