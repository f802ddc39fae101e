"""Reads and writes of the gateway-wide routing settings."""

from __future__ import annotations

from django.db import transaction

from routing.models import RoutingSettings


def routing_settings_get() -> RoutingSettings:
    settings, _ = RoutingSettings.objects.get_or_create(pk=1)
    return settings


@transaction.atomic
def routing_strategy_set(*, strategy: str) -> RoutingSettings:
    """Switch the active strategy (the caller waits for every process: ``wait_for_propagation``)."""
    settings, _ = RoutingSettings.objects.select_for_update().get_or_create(pk=1)
    settings.strategy = strategy
    settings.full_clean()
    settings.save()
    return settings
