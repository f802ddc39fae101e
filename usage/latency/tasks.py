"""Celery tasks of latency aggregation. Thin: each calls a service and is safe to run twice.

Their names keep the `routing.` prefix of the latency API (`/v1/routing/latency`):
schedules and cron jobs (docs/latency.md) call them by name.
"""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from usage.latency.rollup import rollup_recent as rollup
from usage.latency.services import latency_samples_prune


@shared_task(
    name="routing.rollup_recent",
    queue="latency",
    acks_late=True,
    expires=25,  # scheduled every 30 s: a late run is superseded by the next one
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def rollup_recent(minutes: int = 5) -> int:
    """Re-roll the latency rollups of the last minutes from raw samples (catches late samples)."""

    return rollup(minutes=minutes)


@shared_task(
    name="routing.prune_samples",
    queue="latency",
    acks_late=True,
    expires=50 * 60,  # hourly
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def prune_samples() -> int:
    """Delete raw latency samples older than the retention setting (rollups are kept)."""

    return latency_samples_prune()
