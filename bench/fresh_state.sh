# Sourced by the benchmark scripts: `fresh_state DEFAULT_DB_NAME` points the gateway at the
# benchmark's own Postgres database and Redis DB, drops and recreates both, and migrates.
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/DEFAULT_DB_NAME)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
# Expects ROOT (the repository) and PY (its virtualenv's python), and runs from ROOT.
fresh_state() {
  export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$1}"
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
admin = urlunsplit(url._replace(path="/postgres"))
with psycopg.connect(admin, autocommit=True) as conn:
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.execute(f'CREATE DATABASE "{name}"')
redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
PYEOF
  "$PY" manage.py migrate -v 0
}
