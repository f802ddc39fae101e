"""Admin pages of the routing app, one module per area."""

from routing.admin import rules  # noqa: F401
