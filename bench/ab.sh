#!/usr/bin/env bash
# Code trees side by side: bash bench/ab.sh before=/path/to/tree after=. [--connections 16] [--rounds 10]
# Every tree is served at once (one gunicorn worker each, same database, Redis and nginx
# upstream); wrk runs alternate between them; the medians of CPU per request say which
# costs less (bench/ab.py). Own database and Redis DB, dropped and recreated on every run:
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/gw_bench_ab)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export PATH="$PATH:/usr/sbin"
# shellcheck source=bench/fresh_state.sh
source "$ROOT/bench/fresh_state.sh"
fresh_state gw_bench_ab
exec "$PY" -m bench.ab "$@"
