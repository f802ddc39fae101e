"""The monitoring app keeps no tables of its own: spend rollups live in ``usage.UsageRollup``."""
