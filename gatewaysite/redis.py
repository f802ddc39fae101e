"""The process's Redis client, or None in the embedded default (no REDIS_URL)."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_client: redis.Redis | None = None
_client_url = ""
_lock = threading.Lock()


def get_redis() -> redis.Redis | None:
    """The process's client for ``settings.REDIS_URL`` (rebuilt if the setting changes, as tests do)."""
    global _client, _client_url
    url = settings.REDIS_URL
    if not url:
        return None
    if _client is None or _client_url != url:
        with _lock:
            if _client is None or _client_url != url:
                _client = redis.Redis.from_url(
                    url,
                    socket_timeout=5,
                    socket_connect_timeout=2,
                    health_check_interval=30,
                    max_connections=256,
                )
                _client_url = url
    return _client


def reset_redis() -> None:
    """Drop the client (tests that switch REDIS_URL)."""
    global _client
    _client = None
