"""Admin pages of the usage app, one module per area: usage records and dead letters, latency."""

from usage.admin import latency, records  # noqa: F401
