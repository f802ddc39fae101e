"""Admin pages of the routing app, one module per area."""

from routing.admin import latency, rules  # noqa: F401
