"""Throttling of password guessing on the staff logins (``/api/token/`` and the admin's).

Attempts are counted per (username, client address) in the shared cache (Redis when
``REDIS_URL`` is set), so the limit holds across every gateway process; the embedded
default's cache is per process. ``GATEWAY_LOGIN_RATE`` (default ``10/min``) is how
many attempts, successful or not, a username may get from one address in a window
that starts with the first attempt; past it the answer is a 429 in OpenAI's error
shape with ``Retry-After``, whatever the password. Both logins share the counter.

The client address is ``REMOTE_ADDR`` unless ``GATEWAY_TRUSTED_PROXIES`` says how many
proxies in front append to ``X-Forwarded-For`` (DRF's ``NUM_PROXIES``): trusting the
header by default would let anyone pick a fresh address per guess.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from gatewaysite.clock import clock

logger = logging.getLogger(__name__)


def login_attempt(username: str, address: str) -> float | None:
    """Count one login attempt; the seconds to wait when it is over the limit, else None."""
    limit, period = settings.GATEWAY["LOGIN_RATE"]
    digest = hashlib.sha256(f"{username.strip().lower()}\n{address}".encode()).hexdigest()[:32]
    count_key, until_key = f"gw:login:{digest}", f"gw:login:{digest}:until"
    now = clock.time()
    try:
        cache.add(count_key, 0, timeout=period)
        cache.add(until_key, now + period, timeout=period)
        try:
            count = cache.incr(count_key)
        except ValueError:  # the window ended between add and incr
            cache.set(count_key, 1, timeout=period)
            count = 1
        if count <= limit:
            return None
        until = cache.get(until_key)
    except Exception:  # noqa: BLE001 - the cache is down: logins go on, unthrottled, and it is logged
        logger.warning("login throttle unavailable; attempt not counted", exc_info=True)
        return None
    return max(1.0, float(until or now + period) - now)


class LoginRateThrottle(BaseThrottle):
    """DRF throttle for the token endpoint: ``login_attempt`` with the posted username."""

    wait_seconds: float | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        data = request.data
        username = data.get("username") if isinstance(data, dict) else None
        self.wait_seconds = login_attempt(str(username or ""), self.get_ident(request))
        return self.wait_seconds is None

    def wait(self) -> float | None:
        return math.ceil(self.wait_seconds) if self.wait_seconds is not None else None


def client_address(request: Any) -> str:
    return BaseThrottle().get_ident(request)
