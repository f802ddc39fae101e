"""Celery tasks of latency aggregation. Thin: each calls a service and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError


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
    from routing.latency.rollup import rollup_recent as rollup

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
    from routing.latency.services import latency_samples_prune

    return latency_samples_prune()
