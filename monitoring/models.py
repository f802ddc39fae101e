"""Daily spend rollups for the operator overview (exact: recomputed from the usage records)."""

from __future__ import annotations

from django.db import models


class SpendRollup(models.Model):
    """Spend of one UTC day per (team, key, model), summed from ``UsageRecord`` rows.

    A day's rows are replaced whole by ``spend_rollup_refresh`` (delete and insert in one
    transaction), so they always equal a sum over the records as they were then.
    """

    day = models.DateField()
    team = models.CharField(max_length=100, blank=True)
    client_key_id = models.BigIntegerField(null=True)
    key_name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    unpriced_requests = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=24, decimal_places=12, default=0)

    class Meta:
        indexes = [models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.key_name} {self.model}"


class SpendRollupDay(models.Model):
    """When a day's spend rollup was last computed, and from how many records."""

    day = models.DateField(primary_key=True)
    refreshed_at = models.DateTimeField()
    records = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.day} ({self.records} records)"
