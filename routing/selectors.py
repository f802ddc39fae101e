"""Reads of the routing app's own rows (the request path reads the snapshot instead)."""

from __future__ import annotations

from routing.models import RoutingSettings


def routing_settings_read() -> RoutingSettings:
    """The routing settings row; before anything saved it, the defaults (unsaved: a read writes nothing)."""
    return RoutingSettings.objects.filter(pk=1).first() or RoutingSettings(pk=1)
