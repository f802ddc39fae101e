"""What usage (budgets, rate limits) reads of a routed request and of its deployments.

Routing's ``RouteRequest`` and ``DeploymentInfo`` have all of this; routing sits above
usage, so usage names only these protocols, never routing's classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from accounts.keycache import KeyInfo
from providers.pricing.prices import Price


class RoutedDeployment(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def max_output_tokens(self) -> int | None: ...

    @property
    def context_window(self) -> int | None: ...

    @property
    def rpm_limit(self) -> int | None: ...

    @property
    def tpm_limit(self) -> int | None: ...


class PricedConfiguration(Protocol):
    def deployments_for(self, model: str) -> Sequence[Any]: ...

    def price_for(self, deployment: Any, at: datetime) -> Price | None: ...


class RoutedRequest(Protocol):
    model: str
    body: dict[str, Any]
    endpoint: str
    key: KeyInfo
    snapshot: Any  # a PricedConfiguration

    def input_tokens(self) -> tuple[int, str]: ...
