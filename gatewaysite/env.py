"""Typed readers for settings taken from the environment.

Every helper fails loudly (``ImproperlyConfigured``) on a value it cannot parse, so a
typo in a deployment's environment stops the process at start instead of running with a
silent default.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TypedDict

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {parsed}")
    return parsed


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {parsed}")
    return parsed


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def local_secret(name: str, var_dir: Path) -> str:
    """Return secret ``name`` from the environment, or from a file kept in ``var_dir``.

    The embedded default (no environment configured) must start on a fresh machine, so
    missing secrets are generated once and kept in ``var/local-secrets.json`` (mode 0600)
    so that issued keys and sessions survive restarts. Production sets the variables.
    """
    value = os.environ.get(name)
    if value:
        return value
    path = var_dir / "local-secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise ImproperlyConfigured(f"{path} is not valid JSON; delete it to regenerate") from None
    if name not in stored:
        stored[name] = secrets.token_urlsafe(48)
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return stored[name]


_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE_PERIODS.update({"d": 86400, "day": 86400})


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate such as ``10/min`` as (count, seconds); periods s, min, hour, day."""
    value = os.environ.get(name, default)
    count, _, period = value.partition("/")
    try:
        number, seconds = int(count), _RATE_PERIODS[period.strip().lower()]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(f"{name} must look like 10/min (periods s, min, hour, day), got {value!r}") from None
    if number < 1:
        raise ImproperlyConfigured(f"{name} must allow at least 1 per period, got {value!r}")
    return number, seconds


class GatewaySettings(TypedDict):
    """The types of ``settings.GATEWAY``'s values (each explained in gatewaysite/settings.py), for the type checker.

    A key read but missing here, or set there but not declared here, fails ``mypy``."""

    MAX_BODY_BYTES: int
    MAX_ADMIN_BODY_BYTES: int
    CPU_THREADS: int
    BODY_READ_SECONDS: float
    CONFIG_POLL_SECONDS: float
    CONFIG_PROPAGATION_SECONDS: float
    USAGE_STREAM: str
    USAGE_MAX_ATTEMPTS: int
    RECORDING_ENABLED: bool
    API_FAST_PATH: bool
    LOGIN_RATE: tuple[int, int]
    DEMO_SETUP: bool
    ANTHROPIC_DEFAULT_MAX_TOKENS: int
    DEFAULT_EXPECTED_OUTPUT_TOKENS: int
    RETRY_AFTER_MAX_SECONDS: float
    BUDGET_OUTAGE_SHARE: float
    SEED_PRICING: bool
    LATENCY_SAMPLE_RETENTION_DAYS: int
    LATENCY_WINDOW_SECONDS: int
    LATENCY_QUANTILE_CACHE_SECONDS: float
    LATENCY_HALF_LIFE_SECONDS: float
    LATENCY_ERROR_PENALTY_MS: float
    LATENCY_MIN_SAMPLES: int
    LATENCY_EXPLORE_EVERY: int
    METRICS_ENABLED: bool
    METRICS_DIR: str
    METRICS_FLUSH_SECONDS: float
    METRICS_TOKEN: str
    METRICS_NETWORKS: list[str]
    REQUEST_LOG: bool
    READY_CONFIG_MAX_AGE: float
    READY_USAGE_LAG_SECONDS: float
    RATE_LIMIT_WINDOW_SECONDS: float
    KEY_ROTATION_GRACE_SECONDS: int
    USAGE_PARTITIONS_AHEAD_MONTHS: int
    SAMPLE_PARTITIONS_AHEAD_DAYS: int
    USAGE_RETENTION_MONTHS: int
