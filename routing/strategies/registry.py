"""Strategies by name. Adding one: write the class in its own file, add it to this list."""

from __future__ import annotations

from routing.strategies.balanced import BalancedStrategy
from routing.strategies.base import Strategy
from routing.strategies.cost import CostStrategy
from routing.strategies.cost_slo import CostSloStrategy
from routing.strategies.custom import CustomStrategy
from routing.strategies.latency import LatencyStrategy
from routing.strategies.least_busy import LeastBusyStrategy
from routing.strategies.model import ModelStrategy

STRATEGY_CLASSES: list[type[Strategy]] = [
    ModelStrategy,
    BalancedStrategy,
    CostStrategy,
    LatencyStrategy,
    CustomStrategy,
    CostSloStrategy,
    LeastBusyStrategy,
]

STRATEGIES: dict[str, Strategy] = {cls.name: cls() for cls in STRATEGY_CLASSES}
DEFAULT_STRATEGY = "model"


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES[name]
