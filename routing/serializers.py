"""Serializers of the routing app's admin-facing API (``/admin/routing/strategy``).

The request path (``/v1/...``) keeps its measured hand validation
(``routing/services/validation.py``); these serve operators, where clarity wins.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from routing.strategies.registry import strategy_names


class _StrictText(serializers.CharField):
    """A JSON string, not a number turned into one."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrategySwitchSerializer(serializers.Serializer):
    strategy = _StrictText()

    def validate_strategy(self, value: str) -> str:
        if value not in strategy_names():
            raise serializers.ValidationError(
                f"Unknown strategy '{value}'. Valid strategies: {', '.join(strategy_names())}.",
                code="invalid_strategy",
            )
        return value
