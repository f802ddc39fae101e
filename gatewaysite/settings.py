"""Settings: every value comes from the environment (see ``gatewaysite/env.py``).

Unset ``DATABASE_URL`` / ``REDIS_URL`` select the embedded default: SQLite in ``var/``
and in-process fallbacks for shared counters, the usage stream and latency statistics.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url

from gatewaysite.env import env_bool, env_float, env_int, env_list, env_str, local_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GATEWAY_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = local_secret("SECRET_KEY", VAR_DIR)
JWT_SIGNING_KEY = local_secret("JWT_SIGNING_KEY", VAR_DIR)
KEY_PEPPER = local_secret("KEY_PEPPER", VAR_DIR)

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "accounts",
    "providers",
    "routing",
    "usage",
]

MIDDLEWARE = [
    "gatewaysite.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # sessions, CSRF, auth and messages: Django's, skipped on the key-authenticated /v1/ API
    "gatewaysite.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gatewaysite.middleware.CsrfViewMiddleware",
    "gatewaysite.middleware.AuthenticationMiddleware",
    "gatewaysite.middleware.MessageMiddleware",
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
            "NAME": VAR_DIR / "gateway.sqlite3",
            "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")

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
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PARSER_CLASSES": ["gatewaysite.api.parsers.LenientJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "gatewaysite.api.errors.openai_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 30, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 1, minimum=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# Celery: broker is Redis when configured; in the embedded default there is no worker
# and the usage pipeline runs in process (see usage/recorder.py).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- gateway behaviour -------------------------------------------------------------
GATEWAY = {
    # Largest accepted request body, in bytes (413 above it).
    "MAX_BODY_BYTES": env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024),
    # How often each process checks whether operators changed the configuration.
    # 0 turns the background poll off (tests rely on in-process invalidation instead).
    "CONFIG_POLL_SECONDS": env_float("GATEWAY_CONFIG_POLL_SECONDS", 0.5, minimum=0),
    # Seconds an unknown key prefix is remembered as unknown.
    "NEGATIVE_KEY_TTL": env_float("GATEWAY_NEGATIVE_KEY_TTL", 5.0, minimum=0),
    # Redis stream that carries usage events from the request path to the workers.
    "USAGE_STREAM": env_str("GATEWAY_USAGE_STREAM", "gw:usage"),
    # Benchmark-only switch: skip usage/latency recording (see bench/README.md).
    "RECORDING_ENABLED": env_bool("GATEWAY_RECORDING_ENABLED", True),
    # Create the built-in mock provider on `make run` when no provider exists.
    "DEMO_SETUP": env_bool("GATEWAY_DEMO_SETUP", False),
    # Anthropic requires max_tokens; this default applies when the client sends none.
    "ANTHROPIC_DEFAULT_MAX_TOKENS": env_int("GATEWAY_ANTHROPIC_DEFAULT_MAX_TOKENS", 4096, minimum=1),
    # Expected output tokens for estimates when the request has no max_tokens.
    "DEFAULT_EXPECTED_OUTPUT_TOKENS": env_int("GATEWAY_DEFAULT_EXPECTED_OUTPUT_TOKENS", 256, minimum=1),
    # Longest cooldown an upstream's Retry-After (429/503) can put a deployment in (routing/health.py).
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
    "LATENCY_SAMPLE_RETENTION_DAYS": env_int("GATEWAY_LATENCY_SAMPLE_RETENTION_DAYS", 7, minimum=1),
    # Latency strategy: live window and half-life of its decay, what a failed attempt counts as,
    # samples a deployment needs to be ranked, and one request in N that tries one without them.
    "LATENCY_WINDOW_SECONDS": env_int("GATEWAY_LATENCY_WINDOW_SECONDS", 60, minimum=2),
    "LATENCY_HALF_LIFE_SECONDS": env_float("GATEWAY_LATENCY_HALF_LIFE_SECONDS", 10.0, minimum=0.1),
    "LATENCY_ERROR_PENALTY_MS": env_float("GATEWAY_LATENCY_ERROR_PENALTY_MS", 5000.0, minimum=0),
    "LATENCY_MIN_SAMPLES": env_int("GATEWAY_LATENCY_MIN_SAMPLES", 3, minimum=1),
    "LATENCY_EXPLORE_EVERY": env_int("GATEWAY_LATENCY_EXPLORE_EVERY", 20, minimum=0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Request lines are logged by gunicorn's access log (paths only, never headers).
        "django.request": {"level": "ERROR"},
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY["MAX_BODY_BYTES"]
