"""The process's Redis client, or None in the embedded default (no REDIS_URL)."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_client: redis.Redis | None = None
_lock = threading.Lock()


def get_redis() -> redis.Redis | None:
    global _client
    if not settings.REDIS_URL:
        return None
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=5,
                    socket_connect_timeout=2,
                    health_check_interval=30,
                    max_connections=256,
                )
    return _client


def reset_redis() -> None:
    """Drop the client (tests that switch REDIS_URL)."""
    global _client
    _client = None
