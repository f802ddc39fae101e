"""Names a configuration row may use that an upper app defines.

A client key (``accounts``) may name a routing strategy and the models it may call;
strategies and served models belong to ``routing``, which sits above ``accounts``. So
routing registers the two lookups here when it starts (``routing/apps.py``), and the
key forms and commands ask here. Before routing registered (a process without it),
both are empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_strategy_names: Callable[[], Sequence[str]] = tuple
_model_names: Callable[[], Sequence[str]] = tuple


def register(*, strategy_names: Callable[[], Sequence[str]], model_names: Callable[[], Sequence[str]]) -> None:
    global _strategy_names, _model_names
    _strategy_names = strategy_names
    _model_names = model_names


def strategy_names() -> list[str]:
    """Every routing strategy a key or a request may name."""
    return list(_strategy_names())


def model_names() -> list[str]:
    """The models the gateway serves now (from this process's configuration snapshot)."""
    return list(_model_names())
