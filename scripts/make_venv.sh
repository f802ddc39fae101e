#!/usr/bin/env bash
# Makes the virtualenv, make's first step: bash scripts/make_venv.sh VENV [PYTHON ...]
#
# The interpreter: the PYTHON given (make PYTHON=...); else the distribution's Python 3.11
# (/usr/bin/python3.11) when the machine has one, else python3.11 on PATH. Debian's and
# Ubuntu's Python is built with profile-guided and link-time optimization and its executable
# is linked statically; a default pyenv build (often what python3.11 on PATH is) is neither,
# and the gateway's request path costs about a fifth more CPU on it (docs/benchmark.md,
# "The interpreter"). The official Docker image's Python (Dockerfile) is an optimized build too.
#
# Debian ships the venv module apart (python3.11-venv): installed when missing if this runs
# as root with apt-get, else the next interpreter is tried.
set -euo pipefail
venv="$1"
shift
candidates=("$@")
if [ ${#candidates[@]} -eq 0 ]; then
  candidates=(/usr/bin/python3.11 python3.11)
fi
for python in "${candidates[@]}"; do
  command -v "$python" >/dev/null 2>&1 || continue
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || continue
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-venv >/dev/null 2>&1 || true
  fi
  if "$python" -m venv "$venv" >/dev/null 2>&1; then
    echo "virtualenv $venv: $("$venv/bin/python" -c 'import sys; print(sys._base_executable, sys.version.split()[0])')"
    exit 0
  fi
  rm -rf "$venv"
done
echo "Python 3.11 with its venv module is required (tried: ${candidates[*]})" >&2
exit 1
