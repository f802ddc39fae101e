#!/usr/bin/env bash
# Hedged requests benchmark: bash bench/hedge.sh [--requests N] [--delay-ms MS] [--budget PCT]
# Own database and Redis DB, dropped and recreated on every run:
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/gw_bench_hedge)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gw_bench_hedge}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/6}"
export DJANGO_SETTINGS_MODULE=gatewaysite.settings
export DEBUG=0
unset GATEWAY_RECORDING_ENABLED GUNICORN_ACCESS_LOG WEB_CONCURRENCY
"$PY" - <<'PYEOF'
import os
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

url = urlsplit(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
with psycopg.connect(urlunsplit(url._replace(path="/postgres")), autocommit=True) as conn:
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.execute(f'CREATE DATABASE "{name}"')
redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
PYEOF
"$PY" manage.py migrate -v 0
exec "$PY" -m bench.hedge "$@"
