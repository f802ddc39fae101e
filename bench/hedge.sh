#!/usr/bin/env bash
# Hedged requests benchmark: bash bench/hedge.sh [--requests N] [--delay-ms MS] [--budget PCT]
# Own database and Redis DB, dropped and recreated on every run:
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/gw_bench_hedge)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
# shellcheck source=bench/fresh_state.sh
source "$ROOT/bench/fresh_state.sh"
fresh_state gw_bench_hedge
exec "$PY" -m bench.hedge "$@"
