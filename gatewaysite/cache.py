"""Django's Redis cache on the gateway's own Redis client, so every ``REDIS_URL`` form works.

Django's ``RedisCache`` builds its client from a plain URL; this backend hands it the
process's client (``gatewaysite.redis.get_redis``), which also speaks Sentinel and
Cluster. The cache's keys (the login throttle's) are used one at a time.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _GatewayClient(RedisCacheClient):
    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        from gatewaysite.redis import get_redis

        return get_redis()


class GatewayRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _GatewayClient
