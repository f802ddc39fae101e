"""``/readyz``: can this process serve? The database, Redis, the configuration, the usage consumer.

Each check reports ``ok`` and what it measured; the response is 503 when any fails, and
its JSON names the failed checks. Thresholds (environment):

- ``GATEWAY_READY_CONFIG_MAX_AGE`` (10 s): how long this process may route with a
  configuration older than the database's (its poller should catch up within 0.5 s);
- ``GATEWAY_READY_USAGE_LAG_SECONDS`` (60 s): the age of the oldest usage event not yet
  moved into Postgres (a stopped Celery worker shows here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection

from gatewaysite.clock import monotonic, now
from gatewaysite.redis_client import get_redis
from monitoring.selectors import usage_stream_state
from routing.config.cache import config_cache

logger = logging.getLogger(__name__)

Check = dict[str, Any]


def _timed(function: Callable[[], Check]) -> Check:
    started = monotonic()
    try:
        result = function()
    except Exception as exc:  # noqa: BLE001 - reported, with the error's class, as a failed check
        logger.warning("readiness check %s failed", function.__name__, exc_info=True)
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    result["ms"] = round((monotonic() - started) * 1000, 2)
    return result


def _database_version() -> tuple[int, datetime | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version, updated_at FROM routing_configversion WHERE id = 1")
        row = cursor.fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def check_database() -> Check:
    _database_version()
    return {"ok": True}


def check_redis() -> Check:
    client = get_redis()
    if client is None:
        return {"ok": True, "mode": "embedded (no Redis configured)"}
    client.ping()
    return {"ok": True}


def check_config() -> Check:
    """The snapshot this process routes with, against the database's configuration version."""

    snapshot = config_cache.current()
    version, updated_at = _database_version()
    behind = version != snapshot.version
    age = (now() - updated_at).total_seconds() if behind and updated_at is not None else 0.0
    limit = settings.GATEWAY["READY_CONFIG_MAX_AGE"]
    return {
        "ok": age <= limit,
        "version": snapshot.version,
        "database_version": version,
        "stale_seconds": round(age, 3),
        "max_seconds": limit,
    }


def check_usage_consumer() -> Check:

    state = usage_stream_state()
    if state is None:
        return {"ok": True, "mode": "embedded (usage written to the database directly)"}
    limit = settings.GATEWAY["READY_USAGE_LAG_SECONDS"]
    return {
        "ok": state.lag_seconds <= limit,
        "lag_seconds": state.lag_seconds,
        "max_seconds": limit,
        "stream_length": state.length,
        "pending": state.pending,
    }


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "redis": check_redis,
    "config": check_config,
    "usage_consumer": check_usage_consumer,
}


def readiness() -> tuple[bool, dict[str, Any]]:
    checks = {name: _timed(function) for name, function in CHECKS.items()}
    failed = [name for name, result in checks.items() if not result["ok"]]
    return not failed, {"status": "fail" if failed else "ok", "failed": failed, "checks": checks}
