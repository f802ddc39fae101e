"""Writes of the gateway-wide routing settings (reads: ``routing/selectors.py``)."""

from __future__ import annotations

from django.db import transaction

from routing.models import RoutingSettings


def routing_settings_ensure() -> RoutingSettings:
    """The routing settings row, created with the defaults when missing (a write: the admin
    needs a row to open; reads use ``routing.selectors.routing_settings_read``)."""
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
