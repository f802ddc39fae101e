#!/usr/bin/env bash
# The gateway benchmark, one command: bash bench/run.sh [--quick] [--profile] [...]
# (make bench). Options: .venv/bin/python -m bench.bench --help. Results go to
# bench/results/latest.{json,md} and the table into docs/benchmark.md.
# --peers (make bench-peers) adds Portkey's gateway and LiteLLM's proxy beside the gateway:
# pinned versions installed once into bench/.peers/ (npm and PyPI; see bench/peers.py).
#
# Uses its own Postgres database and Redis DB (dropped and recreated on every run):
#   BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/gw_bench)
#   BENCH_REDIS_URL    (redis://127.0.0.1:6379/6)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bench: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
    # the package starts a system nginx on port 80; the benchmark runs its own
    if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx >/dev/null 2>&1 || true; fi
  else
    echo "bench: missing ${need[*]}: run 'sudo apt-get install -y nginx-light wrk' (the benchmark" >&2
    echo "       drives the gateway with wrk and uses nginx as the fixed-response upstream)." >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

if [ ! -x "$PY" ]; then
  echo "bench: no virtualenv at .venv (python3.11 -m venv .venv && .venv/bin/pip install -e '.[test]')" >&2
  exit 1
fi
if [[ " $* " == *" --profile "* ]] && [ ! -x "$ROOT/.venv/bin/py-spy" ]; then
  "$ROOT/.venv/bin/pip" install -q py-spy
fi

# 8,000 streams: 8,000 descriptors in the client, 16,000 in the gateway (client and upstream
# connections), 8,000 in the upstream; each process has its own limit. bench.bench raises
# its own to the hard limit too, and gunicorn's master does (gatewaysite/gunicorn.conf.py).
hard="$(ulimit -Hn)"
if [ "$hard" = "unlimited" ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt 16384 ]; then
  echo "bench: open-file limit is $(ulimit -n); 8,000 streams need 16,000 in the gateway (raise the hard limit)" >&2
fi

# shellcheck source=bench/fresh_state.sh
source "$ROOT/bench/fresh_state.sh"
fresh_state gw_bench

exec "$PY" -m bench.bench "$@"
