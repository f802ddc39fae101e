#!/usr/bin/env bash
# Starts `make run` exactly as the README says, with no DATABASE_URL / REDIS_URL, in a
# scratch var directory, sends one completion through the built-in mock provider and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SMOKE_PORT:-18084}"
scratch="$(mktemp -d)"
log="$scratch/run.log"
cleanup() {
    if [[ -n "${pid:-}" ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
env -u DATABASE_URL -u REDIS_URL GATEWAY_VAR_DIR="$scratch/var" PORT="$port" setsid make run >"$log" 2>&1 &
pid=$!
healthy=""
for _ in $(seq 1 600); do  # up to 5 minutes: a first start installs, migrates and collects static files
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then healthy=1; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "smoke: make run exited"; cat "$log"; exit 1; fi
    sleep 0.5
done
[[ -n "$healthy" ]] || { echo "smoke: the gateway did not answer /healthz in time"; cat "$log"; exit 1; }
key="$(grep -o 'gwk_[A-Za-z0-9_-]*' "$log" | head -n 1 || true)"
[[ -n "$key" ]] || { echo "smoke: no demo key printed"; cat "$log"; exit 1; }
response="$(curl -fsS "http://127.0.0.1:$port/v1/chat/completions" -H "Authorization: Bearer $key" \
    -d '{"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}')"
[[ "$response" == *'"chat.completion"'* ]] || { echo "smoke: unexpected answer: $response"; exit 1; }
echo "smoke: ok: $response"
kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=""
