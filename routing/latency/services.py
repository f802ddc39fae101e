"""Writes on latency data: pruning raw samples (rollups are kept)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from gatewaysite.clock import now
from routing.models import LatencySample


def latency_samples_prune(*, older_than: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete raw samples created before ``older_than`` (default: the retention setting), in batches.

    Small batches keep each DELETE short, so the ingest path never waits long on it.
    Returns the number of rows deleted. On Postgres the table is partitioned by day and
    ``usage.maintain_partitions`` drops whole days past retention first; this deletes what
    is left (the default partition, the part of a day past the cutoff).
    """
    if older_than is None:
        older_than = now() - timedelta(days=settings.GATEWAY["LATENCY_SAMPLE_RETENTION_DAYS"])
    deleted = 0
    while True:
        ids = list(
            LatencySample.objects.filter(created_at__lt=older_than)
            .order_by("created_at")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        count, _ = LatencySample.objects.filter(id__in=ids).delete()
        deleted += count
        if len(ids) < batch_size:
            return deleted
