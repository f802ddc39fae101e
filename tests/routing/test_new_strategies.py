"""``cost-slo`` and ``least-busy`` rankings, and outlier ejection, on in-memory snapshots.

Latency figures are real observations fed to the live-latency store (the same calls the
request path makes); the clock is swapped, never slept on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gatewaysite import clock as clock_module
from gatewaysite.api.errors import InvalidRequest
from routing.config.snapshot import RoutingSettingsInfo
from routing.inflight import in_flight
from routing.outlier import outliers
from routing.strategies.cost_slo import CostSloStrategy
from routing.strategies.registry import get_strategy
from tests.routing.builders import deployment, key, price, route, rule, snapshot
from usage.latency.live import live_latency


@pytest.fixture(autouse=True)
def _clean_redis(redis_client: Any) -> None:
    """The live window is shared through Redis: start every test from an empty one."""


def three(settings: RoutingSettingsInfo | None = None, **rules: Any) -> Any:
    deps = [deployment("cheap"), deployment("mid"), deployment("fast")]
    prices = {"cheap": [price("1", "1")], "mid": [price("3", "3")], "fast": [price("10", "10")]}
    return snapshot(
        deps, prices=prices, settings=settings or RoutingSettingsInfo(latency_slo_ms=300, slo_explore_percent=0)
    )


def feed(name: str, ms: float, count: int = 20, *, stream: bool = False) -> None:
    for _ in range(count):
        live_latency.observe(name, ms, True, stream=stream)


def names(ranking: Any) -> list[str]:
    return [d.name for d in ranking.candidates]


def test_cost_slo_picks_the_cheapest_deployment_meeting_the_objective() -> None:
    snap = three()
    feed("cheap", 800)
    feed("mid", 200)
    feed("fast", 50)
    ranking = get_strategy("cost-slo").choose(route(snap), snap.deployments_for("gpt-4o"))
    assert names(ranking)[0] == "mid" and ranking.reason == "slo_met"
    assert ranking.scores["mid"]["meets_objective"] is True
    assert ranking.scores["cheap"]["meets_objective"] is False
    assert ranking.scores["mid"]["objective_source"] == "gateway"


def test_cost_slo_moves_to_the_pricier_one_when_the_cheaper_misses_and_takes_the_fastest_when_none_meets() -> None:
    snap = three()
    feed("cheap", 800)
    feed("mid", 500)
    feed("fast", 50)
    assert names(get_strategy("cost-slo").choose(route(snap), snap.deployments_for("gpt-4o")))[0] == "fast"
    live_latency.reset()
    feed("cheap", 800)
    feed("mid", 500)
    feed("fast", 400)
    ranking = get_strategy("cost-slo").choose(route(snap), snap.deployments_for("gpt-4o"))
    assert names(ranking) == ["fast", "mid", "cheap"] and ranking.reason == "slo_fastest"


def test_cost_slo_tries_unmeasured_deployments_before_known_misses() -> None:
    snap = three()
    feed("cheap", 800)
    feed("mid", 500)
    ranking = get_strategy("cost-slo").choose(route(snap), snap.deployments_for("gpt-4o"))
    assert names(ranking)[0] == "fast" and ranking.reason == "slo_unmeasured"


def test_cost_slo_uses_time_to_first_token_for_streams() -> None:
    snap = three()
    feed("cheap", 800)
    feed("mid", 900)
    feed("fast", 50)
    feed("cheap", 100, stream=True)
    feed("mid", 100, stream=True)
    feed("fast", 100, stream=True)
    assert (
        names(get_strategy("cost-slo").choose(route(snap, stream=True), snap.deployments_for("gpt-4o")))[0] == "cheap"
    )
    assert names(get_strategy("cost-slo").choose(route(snap), snap.deployments_for("gpt-4o")))[0] == "fast"


def test_cost_slo_explores_at_the_configured_rate() -> None:
    snap = three(RoutingSettingsInfo(latency_slo_ms=300, slo_explore_percent=10))
    feed("cheap", 800)
    feed("mid", 200)  # fast has no samples: explored, as is cheap (cheaper than the pick)
    strategy = get_strategy("cost-slo")
    firsts = [names(strategy.choose(route(snap), snap.deployments_for("gpt-4o")))[0] for _ in range(100)]
    assert firsts.count("mid") == 90
    assert firsts.count("fast") == 5 and firsts.count("cheap") == 5


class SecondsClock:
    """Moves the clock's wall time (the live-latency seconds) without sleeping."""

    def __init__(self, monkeypatch: Any) -> None:
        self.offset = 0.0
        real = clock_module.clock.time
        monkeypatch.setattr(clock_module.clock, "time", lambda: real() + self.offset)


def test_cost_slo_leaves_a_deployment_only_when_a_second_read_confirms_it(monkeypatch: Any) -> None:
    clock = SecondsClock(monkeypatch)
    snap = three()
    strategy = CostSloStrategy()
    deps = snap.deployments_for("gpt-4o")
    feed("cheap", 800)
    feed("fast", 50)
    feed("mid", 200)
    clock.offset += 2
    feed("mid", 200)
    clock.offset += 1
    feed("mid", 200, 17)
    feed("mid", 450, 3)  # a stall: three late answers among the newest twenty
    ranking = strategy.choose(route(snap), deps)
    assert names(ranking)[0] == "mid" and ranking.reason == "slo_held"
    assert ranking.scores["mid"]["held"] is True and ranking.scores["mid"]["meets_objective"] is True
    assert ranking.scores["mid"]["p95_ms"] > 300 and ranking.scores["mid"]["previous_p95_ms"] < 300
    clock.offset += 2
    feed("mid", 450)  # still slow a second later: it really is
    ranking = strategy.choose(route(snap), deps)
    assert names(ranking)[0] == "fast" and ranking.reason == "slo_met"
    assert ranking.scores["mid"]["meets_objective"] is False and ranking.scores["mid"]["held"] is False
    clock.offset += 2
    feed("mid", 200)  # recovered: its newest read alone takes it back
    ranking = strategy.choose(route(snap), deps)
    assert names(ranking)[0] == "mid" and ranking.reason == "slo_met"


def test_cost_slo_exploration_is_a_capped_budget_of_the_choices() -> None:
    snap = three(RoutingSettingsInfo(latency_slo_ms=300, slo_explore_percent=3))
    deps = snap.deployments_for("gpt-4o")
    strategy = CostSloStrategy()
    feed("cheap", 800)
    feed("mid", 200)
    feed("fast", 50)  # cheap is explored (cheaper than the pick, missing), fast is not (pricier, measured)
    firsts = [names(strategy.choose(route(snap), deps))[0] for _ in range(1000)]
    assert firsts.count("cheap") == 30 and firsts.count("mid") == 970
    explained = [strategy.choose(dataclasses.replace(route(snap), dry_run=True), deps).reason for _ in range(100)]
    assert explained.count("slo_explore") in (0, 100)  # explain spends nothing
    live_latency.reset()
    feed("cheap", 200)  # the cheapest meets it: nothing to explore, for a long stretch
    feed("mid", 200)
    feed("fast", 50)
    assert all(strategy.choose(route(snap), deps).reason == "slo_met" for _ in range(1000))
    live_latency.reset()
    feed("cheap", 800)
    feed("mid", 200)
    feed("fast", 50)
    firsts = [names(strategy.choose(route(snap), deps))[0] for _ in range(100)]
    assert firsts[0] == "cheap" and firsts.count("cheap") == 1 + 3  # the one choice of credit saved, then 3%


def test_objective_precedence_request_rule_key_gateway() -> None:
    settings = RoutingSettingsInfo(latency_slo_ms=300, slo_explore_percent=0, allow_request_latency_slo=True)
    snap = three(settings)
    feed("cheap", 800)
    feed("mid", 200)
    feed("fast", 50)
    strategy = get_strategy("cost-slo")
    deps = snap.deployments_for("gpt-4o")
    assert names(strategy.choose(route(snap, headers={"x-gateway-latency-slo-ms": "100"}), deps))[0] == "fast"
    assert names(strategy.choose(route(snap, headers={"x-gateway-latency-slo-ms": "1000"}), deps))[0] == "cheap"
    client = dataclasses.replace(key(), latency_slo_ms=100)
    assert names(strategy.choose(route(snap, client=client), deps))[0] == "fast"
    request = route(snap, client=client)
    request.rule = rule("r", 1, latency_slo_ms=1000)
    ranking = strategy.choose(request, deps)
    assert names(ranking)[0] == "cheap" and ranking.scores["cheap"]["objective_source"] == "rule"
    with pytest.raises(InvalidRequest):
        strategy.choose(route(snap, headers={"x-gateway-latency-slo-ms": "fast please"}), deps)
    strict = three(dataclasses.replace(settings, allow_request_latency_slo=False))
    assert names(strategy.choose(route(strict, headers={"x-gateway-latency-slo-ms": "100"}), deps))[0] == "mid"


def test_least_busy_counts_in_flight_per_unit_of_weight() -> None:
    deps = [deployment("a", weight=1), deployment("b", weight=2)]
    snap = snapshot(deps)
    strategy = get_strategy("least-busy")
    assert names(strategy.choose(route(snap), deps))[0] == "b"  # both idle: the higher weight
    in_flight.acquire("b")
    in_flight.acquire("b")
    in_flight.acquire("a")
    ranking = strategy.choose(route(snap), deps)
    assert names(ranking) == ["a", "b"] or ranking.scores["a"]["load"] <= ranking.scores["b"]["load"]
    in_flight.acquire("b")  # a: 1/1, b: 3/2
    ranking = strategy.choose(route(snap), deps)
    assert names(ranking)[0] == "a" and ranking.scores["b"]["in_flight"] == 3
    for _ in range(3):
        in_flight.release("b")
    assert names(strategy.choose(route(snap), deps))[0] == "b"


# --- outlier ejection ---------------------------------------------------------------------------


class Clock:
    def __init__(self, monkeypatch: Any) -> None:
        self.offset = 0.0
        real = clock_module.clock.monotonic
        monkeypatch.setattr(clock_module.clock, "monotonic", lambda: real() + self.offset)


def outlier_snapshot(count: int = 5, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "outlier_enabled": True,
        "outlier_consecutive_5xx": 5,
        "outlier_max_ejection_percent": 20,
        "outlier_minimum_hosts": 3,
        "outlier_request_volume": 10,
        **fields,
    }
    settings = RoutingSettingsInfo(**values)
    return snapshot([deployment(f"d{i}") for i in range(count)], settings=settings)


def observe(snap: Any, name: str, *, ok: bool, count: int = 1, latency: float = 100.0, status: int = 500) -> None:
    for _ in range(count):
        outliers.observe(name, "gpt-4o", ok=ok, server_error=status >= 500, latency_ms=latency, snapshot=snap)


def test_consecutive_5xx_eject_for_a_growing_time(monkeypatch: Any) -> None:
    clock = Clock(monkeypatch)
    snap = outlier_snapshot()
    observe(snap, "d0", ok=False, count=4)
    observe(snap, "d0", ok=True)  # a success resets the streak
    observe(snap, "d0", ok=False, count=4)
    assert not outliers.ejected("d0")
    observe(snap, "d0", ok=False)
    assert outliers.ejected("d0") and outliers.status()["d0"]["reason"] == "consecutive_5xx"
    clock.offset += 31
    assert not outliers.ejected("d0")
    observe(snap, "d0", ok=False, count=5)
    assert outliers.status()["d0"]["seconds_left"] == pytest.approx(60, abs=1)  # 30 s x 2nd ejection
    observe(snap, "d1", ok=False, count=5, status=429)  # not the upstream's fault: no ejection
    assert not outliers.ejected("d1")


def test_at_most_the_maximum_share_is_ejected_but_always_one() -> None:
    snap = outlier_snapshot(count=5)  # 20% of 5: one
    observe(snap, "d0", ok=False, count=5)
    observe(snap, "d1", ok=False, count=5)
    assert outliers.ejected("d0") and not outliers.ejected("d1")
    two = outlier_snapshot(count=2, outlier_max_ejection_percent=0)
    outliers.reset()
    observe(two, "d0", ok=False, count=5)
    assert outliers.ejected("d0")  # at least one, whatever the percentage


def test_success_rate_and_failure_percentage_judge_against_peers(monkeypatch: Any) -> None:
    clock = Clock(monkeypatch)
    snap = outlier_snapshot(count=5, outlier_consecutive_5xx=0, outlier_failure_percentage_threshold=0)
    for name in ("d1", "d2", "d3", "d4"):
        observe(snap, name, ok=True, count=20)
    for _ in range(10):  # d0: half its requests fail, interleaved (no streak)
        observe(snap, "d0", ok=True)
        observe(snap, "d0", ok=False)
    clock.offset += 11
    outliers.tick(snap)
    assert outliers.ejected("d0") and outliers.status()["d0"]["reason"] == "success_rate"
    assert not any(outliers.ejected(n) for n in ("d1", "d2", "d3", "d4"))

    outliers.reset()
    snap = outlier_snapshot(count=3, outlier_consecutive_5xx=0, outlier_success_rate_stdev_factor=0)
    observe(snap, "d1", ok=True, count=10)
    observe(snap, "d2", ok=True, count=10)
    observe(snap, "d0", ok=True, count=1)
    for _ in range(9):  # 90% failures (the threshold is 85), interleaved with nothing: no streak detector
        observe(snap, "d0", ok=False)
    clock.offset += 11
    outliers.tick(snap)
    assert outliers.ejected("d0") and outliers.status()["d0"]["reason"] == "failure_percentage"


def test_too_few_peers_or_requests_are_not_judged(monkeypatch: Any) -> None:
    clock = Clock(monkeypatch)
    snap = outlier_snapshot(count=5, outlier_consecutive_5xx=0)
    observe(snap, "d1", ok=True, count=20)
    observe(snap, "d0", ok=False, count=20)  # only two deployments with volume: below the minimum of 3
    clock.offset += 11
    outliers.tick(snap)
    assert not outliers.ejected("d0")


def test_latency_outlier_when_enabled(monkeypatch: Any) -> None:
    clock = Clock(monkeypatch)
    snap = outlier_snapshot(count=4, outlier_consecutive_5xx=0, outlier_latency_factor=3.0)
    for name in ("d1", "d2", "d3"):
        observe(snap, name, ok=True, count=10, latency=100)
    observe(snap, "d0", ok=True, count=10, latency=1000)
    clock.offset += 11
    outliers.tick(snap)
    assert outliers.ejected("d0") and outliers.status()["d0"]["reason"] == "latency"


def test_planning_skips_ejected_deployments_and_explain_says_why(db: None) -> None:
    from routing.services.explain import routing_explain
    from routing.services.planning import plan_route

    snap = outlier_snapshot(count=3)
    observe(snap, "d0", ok=False, count=5)
    request = route(snap)
    assert "d0" not in names(plan_route(request))
    explained = routing_explain(route=request)
    assert {"deployment": "d0", "provider": "d0", "reason": "ejected"} in explained["excluded"]
