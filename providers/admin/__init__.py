"""Admin pages of the providers app, one module per area."""

from providers.admin import pricing, providers  # noqa: F401
