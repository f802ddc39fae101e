"""Celery tasks of the usage pipeline. Thin: each calls a service and is safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from usage.consumer import drain
from usage.latency.tasks import prune_samples, rollup_recent  # noqa: F401 - Celery discovers tasks in usage.tasks
from usage.partitions import partitions_maintain
from usage.spool import spool_replay

# The stream tasks run late-acknowledged on the usage queue and retry, backing off, while Redis or Postgres is away.
_USAGE_TASK: dict[str, Any] = {
    "queue": "usage",
    "acks_late": True,
    "autoretry_for": (RedisConnectionError, RedisTimeoutError, OperationalError),
    "retry_backoff": True,
}


@shared_task(name="usage.drain_stream", expires=10, max_retries=5, **_USAGE_TASK)
def drain_stream() -> int:
    """Move usage events from the Redis stream into Postgres (scheduled every second)."""

    return drain()


@shared_task(name="usage.replay_spool", expires=25, max_retries=3, **_USAGE_TASK)
def replay_spool() -> int:
    """Send spooled usage events (Redis was down when they were recorded) back into Redis (every 10 s)."""

    return spool_replay()


@shared_task(
    name="usage.maintain_partitions",
    queue="default",
    acks_late=True,
    expires=50 * 60,  # hourly
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def maintain_partitions() -> dict[str, list[str]]:
    """Create the coming partitions, drop those past retention (Postgres; docs/scaling.md)."""

    return partitions_maintain()
