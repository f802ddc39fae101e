"""Test settings: the real services (Postgres, Redis) unless the environment says otherwise."""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("GATEWAY_CONFIG_POLL_SECONDS", "0")  # tests invalidate in process
os.environ.setdefault("GATEWAY_PLAIN_STATIC", "1")
os.environ.setdefault("GATEWAY_LATENCY_QUANTILE_CACHE_SECONDS", "0")  # in-process tests read samples they just made
os.environ.setdefault("GATEWAY_SEED_PRICING", "0")  # tests create the prices they need
os.environ.setdefault("GATEWAY_LOGIN_RATE", "1000/min")  # tests log in often; the throttle's own tests set theirs
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_ROOT.parent / "shared" / "data" / "tiktoken"))
os.environ.setdefault("GATEWAY_VAR_DIR", str(_ROOT / "var" / "test"))

from gatewaysite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - WhiteNoise warns when it is missing
