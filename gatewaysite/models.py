"""The one model of the bottom layer: the configuration version every app's writes bump."""

from __future__ import annotations

from django.db import models


class ConfigVersion(models.Model):
    """One row whose ``version`` rises with every configuration change.

    Each gateway process polls it (``routing/config/cache.py``) and reloads its in-process
    snapshot of keys, providers, deployments, pricing and rules when it moves. The bump
    runs inside the writer's transaction, so readers never see a version whose data is
    not committed yet.
    """

    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "routing_configversion"  # created by the routing app; the table kept its name
