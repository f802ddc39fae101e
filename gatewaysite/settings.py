"""Settings: every value comes from the environment (see ``gatewaysite/env.py``).

Unset ``DATABASE_URL`` / ``REDIS_URL`` select the embedded default: SQLite in ``var/``
and in-process fallbacks for shared counters, the usage stream and latency statistics.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gatewaysite.env import GatewaySettings, env_bool, env_float, env_int, env_list, env_rate, env_str, local_secret
from gatewaysite.redis_client import celery_broker

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GATEWAY_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = local_secret("SECRET_KEY", VAR_DIR)
JWT_SIGNING_KEY = local_secret("JWT_SIGNING_KEY", VAR_DIR)
KEY_PEPPER = local_secret("KEY_PEPPER", VAR_DIR)
# Fernet keys for provider API keys at rest, comma-separated: the first encrypts, all decrypt.
# Unset: one key derived from SECRET_KEY (providers/encryption.py, docs/configuration.md).
GATEWAY_ENCRYPTION_KEYS = env_list("GATEWAY_ENCRYPTION_KEYS", [])

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS (docs/configuration.md, "HTTPS and `check --deploy`"). Off by default: the embedded
# default (`make run`) serves plain HTTP on :8084. GATEWAY_HTTPS=1 turns on the redirect,
# secure cookies and HSTS (one year, subdomains, preload); each can be set on its own.
# Behind a proxy that terminates TLS, GATEWAY_BEHIND_TLS_PROXY=1 trusts its
# X-Forwarded-Proto (only when the proxy sets it on every request, overwriting the client's).
GATEWAY_HTTPS = env_bool("GATEWAY_HTTPS", False)
if env_bool("GATEWAY_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", GATEWAY_HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the container health check calls http://127.0.0.1
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", GATEWAY_HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", GATEWAY_HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if GATEWAY_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", GATEWAY_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", GATEWAY_HTTPS)
# Django's check looks for its own CsrfViewMiddleware by name; ours is that class, skipped
# only on the key-authenticated /v1/ API (gatewaysite/middleware.py). gatewaysite/checks.py
# checks for it instead.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

INSTALLED_APPS = [
    "monitoring",  # before the admin: its admin/index.html adds the operator overview link
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API docs page's JavaScript and CSS, served by the gateway (no CDN)
    "gatewaysite",  # the bottom layer: configuration version and change notification
    "accounts",
    "providers",
    "routing",
    "usage",
]

MIDDLEWARE = [
    "gatewaysite.middleware.RequestIdMiddleware",
    # request id in every log line, one log line per request, HTTP metrics (docs/observability.md)
    "monitoring.middleware.ObservabilityMiddleware",
    # reads the body bounded in size and time (413, 408), chunked bodies included
    "gatewaysite.middleware.RequestBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # sessions, CSRF, auth and messages: Django's, skipped on the key-authenticated /v1/ API
    "gatewaysite.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gatewaysite.middleware.CsrfViewMiddleware",
    "gatewaysite.middleware.AuthenticationMiddleware",
    "gatewaysite.middleware.MessageMiddleware",
    # after a configuration write: wait (bounded) until every process serves it; say so if not
    "gatewaysite.config.middleware.ConfigPropagationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gatewaysite.urls"
WSGI_APPLICATION = "gatewaysite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "gatewaysite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "gateway.sqlite3"),
            "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")

# The cache holds the login throttle's counters (accounts/throttling.py): shared by every
# process through Redis when configured, per process in the embedded default.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "gatewaysite.cache.GatewayRedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if env_bool("GATEWAY_PLAIN_STATIC", False):  # tests: no collectstatic manifest needed
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.jwt.StaffJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PARSER_CLASSES": ["gatewaysite.api.parsers.LenientJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "gatewaysite.api.errors.openai_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Proxies in front that append the client's address to X-Forwarded-For; 0: REMOTE_ADDR
    # is the client (the default: the header is not trusted, see accounts/throttling.py).
    "NUM_PROXIES": env_int("GATEWAY_TRUSTED_PROXIES", 0, minimum=0),
}

SIMPLE_JWT = {
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 30, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 1, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    # A refresh token must name an existing, active user (accounts/jwt.py).
    "TOKEN_REFRESH_SERIALIZER": "accounts.jwt.CheckedTokenRefreshSerializer",
}

# Celery: broker is Redis when configured; in the embedded default there is no worker
# and the usage pipeline runs in process (see usage/recorder.py).
# The broker is REDIS_URL's Redis unless CELERY_BROKER_URL says otherwise; a Sentinel
# REDIS_URL becomes kombu's sentinel:// broker; a Cluster one needs CELERY_BROKER_URL
# (kombu has no Cluster transport; docs/scaling.md).
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
    if CELERY_BROKER_URL.startswith("sentinel://"):
        CELERY_BROKER_TRANSPORT_OPTIONS = {"master_name": env_str("CELERY_BROKER_MASTER_NAME", "mymaster")}
else:
    try:
        CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = celery_broker(REDIS_URL)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)


# --- gateway behaviour -------------------------------------------------------------
GATEWAY: GatewaySettings = {
    # Largest accepted request body, in bytes (413 above it).
    "MAX_BODY_BYTES": env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024),
    # Largest body elsewhere (admin forms, price-list uploads), in bytes (413 above it).
    "MAX_ADMIN_BODY_BYTES": env_int("GATEWAY_MAX_ADMIN_BODY_BYTES", 32 * 1024 * 1024, minimum=1024),
    # Native threads per process for CPU work on large bodies (tokenizing; gatewaysite/offload.py).
    "CPU_THREADS": env_int("GATEWAY_CPU_THREADS", 1, minimum=1),
    # Seconds a client has to send its whole request body (408 after it; 0: no limit).
    "BODY_READ_SECONDS": env_float("GATEWAY_BODY_READ_SECONDS", 30.0, minimum=0),
    # How often each process checks whether operators changed the configuration.
    # 0 turns the background poll off (tests rely on in-process invalidation instead).
    "CONFIG_POLL_SECONDS": env_float("GATEWAY_CONFIG_POLL_SECONDS", 0.5, minimum=0),
    # The propagation bound (docs/architecture.md, "Configuration changes reach every process"):
    # how long a configuration write waits for every live process to acknowledge it, and the
    # notice a new price gets: "now" for a price means its write time plus this.
    "CONFIG_PROPAGATION_SECONDS": env_float("GATEWAY_CONFIG_PROPAGATION_SECONDS", 2.0, minimum=0.5),
    # Redis stream that carries usage events from the request path to the workers.
    # Its name carries the {gw} hash tag: the recorder's script writes it together with the
    # spend and budget counters (one hash slot on Redis Cluster; docs/scaling.md).
    "USAGE_STREAM": env_str("GATEWAY_USAGE_STREAM", "{gw}:usage"),
    # Failed ingestions of one stream entry before it moves to the dead letters (UsageDeadLetter).
    "USAGE_MAX_ATTEMPTS": env_int("GATEWAY_USAGE_MAX_ATTEMPTS", 3, minimum=1),
    # The key-authenticated API's fixed paths skip Django's URL resolution and the middleware
    # that pass them through (gatewaysite/api/handler.py); 0 sends them the long way, same answers.
    "API_FAST_PATH": env_bool("GATEWAY_API_FAST_PATH", True),
    # Benchmark-only switch: skip usage/latency recording (docs/benchmark.md, "Recording off").
    "RECORDING_ENABLED": env_bool("GATEWAY_RECORDING_ENABLED", True),
    # Staff login attempts per username and client address (accounts/throttling.py).
    "LOGIN_RATE": env_rate("GATEWAY_LOGIN_RATE", "10/min"),
    # Create the built-in mock provider on `make run` when no provider exists.
    "DEMO_SETUP": env_bool("GATEWAY_DEMO_SETUP", False),
    # Anthropic requires max_tokens; this default applies when the client sends none.
    "ANTHROPIC_DEFAULT_MAX_TOKENS": env_int("GATEWAY_ANTHROPIC_DEFAULT_MAX_TOKENS", 4096, minimum=1),
    # Expected output tokens for estimates when the request has no max_tokens.
    "DEFAULT_EXPECTED_OUTPUT_TOKENS": env_int("GATEWAY_DEFAULT_EXPECTED_OUTPUT_TOKENS", 256, minimum=1),
    # Longest cooldown an upstream's Retry-After (429/503) can put a deployment in (routing/cooldowns.py).
    "RETRY_AFTER_MAX_SECONDS": env_float("GATEWAY_RETRY_AFTER_MAX_SECONDS", 60.0, minimum=0),
    # Budgets that fail open while Redis is down: the share of the budget each server process
    # may hold (at the requests' maximum cost) until Redis is back (docs/cost.md).
    "BUDGET_OUTAGE_SHARE": env_float("GATEWAY_BUDGET_OUTAGE_SHARE", 0.1, minimum=0),
    # Rate limits (usage/ratelimits.py): the sliding window's length. RPM/TPM limits count over it;
    # 60 in production, shorter only in tests and demos that want to see a window pass.
    "RATE_LIMIT_WINDOW_SECONDS": env_float("GATEWAY_RATE_LIMIT_WINDOW_SECONDS", 60.0, minimum=0.06),
    # Key rotation: how long the replaced secret keeps working unless the operator says otherwise.
    "KEY_ROTATION_GRACE_SECONDS": env_int("GATEWAY_KEY_ROTATION_GRACE_SECONDS", 86_400, minimum=0),
    # Load the shipped price list on `migrate` (providers/pricing/seed_prices.json, docs/cost.md).
    "SEED_PRICING": env_bool("GATEWAY_SEED_PRICING", True),
    # Latency (docs/latency.md): raw samples older than this are pruned; rollups are kept.
    # On Postgres whole daily partitions are dropped (docs/scaling.md).
    "LATENCY_SAMPLE_RETENTION_DAYS": env_int("GATEWAY_LATENCY_SAMPLE_RETENTION_DAYS", 7, minimum=1),
    # Postgres partitions (usage/partitions.py, docs/scaling.md): created this far ahead by
    # usage.maintain_partitions; usage records kept this many whole months (0: forever).
    "USAGE_PARTITIONS_AHEAD_MONTHS": env_int("GATEWAY_USAGE_PARTITIONS_AHEAD_MONTHS", 2, minimum=1),
    "SAMPLE_PARTITIONS_AHEAD_DAYS": env_int("GATEWAY_SAMPLE_PARTITIONS_AHEAD_DAYS", 7, minimum=1),
    "USAGE_RETENTION_MONTHS": env_int("GATEWAY_USAGE_RETENTION_MONTHS", 0, minimum=0),
    # Latency strategy: live window and half-life of its decay, what a failed attempt counts as,
    # samples a deployment needs to be ranked, and one request in N that tries one without them.
    "LATENCY_WINDOW_SECONDS": env_int("GATEWAY_LATENCY_WINDOW_SECONDS", 60, minimum=2),
    "LATENCY_QUANTILE_CACHE_SECONDS": env_float("GATEWAY_LATENCY_QUANTILE_CACHE_SECONDS", 0.25, minimum=0.0),
    "LATENCY_HALF_LIFE_SECONDS": env_float("GATEWAY_LATENCY_HALF_LIFE_SECONDS", 10.0, minimum=0.1),
    "LATENCY_ERROR_PENALTY_MS": env_float("GATEWAY_LATENCY_ERROR_PENALTY_MS", 5000.0, minimum=0),
    "LATENCY_MIN_SAMPLES": env_int("GATEWAY_LATENCY_MIN_SAMPLES", 3, minimum=1),
    "LATENCY_EXPLORE_EVERY": env_int("GATEWAY_LATENCY_EXPLORE_EVERY", 20, minimum=0),
    # Observability (docs/observability.md). Metrics: per-process sums, written to one file per
    # process in METRICS_DIR every METRICS_FLUSH_SECONDS and added up by /metrics.
    "METRICS_ENABLED": env_bool("GATEWAY_METRICS_ENABLED", True),
    "METRICS_DIR": env_str("GATEWAY_METRICS_DIR", str(VAR_DIR / "metrics")),
    "METRICS_FLUSH_SECONDS": env_float("GATEWAY_METRICS_FLUSH_SECONDS", 1.0, minimum=0),
    # /metrics: a bearer token (from anywhere) or a peer address in these networks.
    "METRICS_TOKEN": env_str("GATEWAY_METRICS_TOKEN", ""),
    "METRICS_NETWORKS": env_list("GATEWAY_METRICS_NETWORKS", ["127.0.0.1/32", "::1/128"]),
    # One log line per request (logger gateway.request).
    "REQUEST_LOG": env_bool("GATEWAY_REQUEST_LOG", True),
    # /readyz thresholds, in seconds.
    "READY_CONFIG_MAX_AGE": env_float("GATEWAY_READY_CONFIG_MAX_AGE", 10.0, minimum=0),
    "READY_USAGE_LAG_SECONDS": env_float("GATEWAY_READY_USAGE_LAG_SECONDS", 60.0, minimum=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM gateway API",
    "DESCRIPTION": "OpenAI-compatible chat completions with routing, fallbacks and exact cost tracking.",
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["monitoring.schema.public_endpoints"],
    "POSTPROCESSING_HOOKS": ["monitoring.schema.openai_errors"],
}

# One JSON object per line; LOG_FORMAT=plain for development. Every line written while a
# request is served carries its request_id (monitoring/logs.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "monitoring.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "monitoring.logs.JsonFormatter"},
        "plain": {"()": "monitoring.logs.PlainFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if env_str("LOG_FORMAT", "json").lower() == "plain" else "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Requests are logged once each by logger gateway.request (monitoring/middleware.py).
        "django.request": {"level": "ERROR"},
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY["MAX_BODY_BYTES"]
