"""Celery tasks of the operator overview. Thin: each calls a service and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from monitoring.spend import spend_rollup_recent


@shared_task(
    name="monitoring.rollup_spend",
    queue="default",
    acks_late=True,
    expires=50,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def rollup_spend() -> int:
    """Recompute yesterday's and today's spend rollups (scheduled every minute)."""

    return spend_rollup_recent()
