#!/usr/bin/env bash
# Instructions per request of code trees, counted by callgrind (bench/instructions.py):
#   bash bench/instructions.sh before=/path/to/tree after=. [--concurrency 16]
# Own database and Redis DB, dropped and recreated on every run:
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/gw_bench_instructions)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export PATH="$PATH:/usr/sbin"
command -v valgrind >/dev/null 2>&1 || { echo "bench: valgrind is needed (apt-get install -y valgrind)" >&2; exit 1; }
# every tree reads the same SECRET_KEY (the stored provider keys are encrypted with it)
export GATEWAY_VAR_DIR="${GATEWAY_VAR_DIR:-$ROOT/var}"
# shellcheck source=bench/fresh_state.sh
source "$ROOT/bench/fresh_state.sh"
fresh_state gw_bench_instructions
exec "$PY" -m bench.instructions "$@"
