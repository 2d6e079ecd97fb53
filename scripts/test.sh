#!/usr/bin/env bash
# Sets everything up (idempotent, cached) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m unit` for the fast tests only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh --with-redis
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"
exec .venv/bin/python -m pytest -p no:cacheprovider --timeout=1800 --durations=25 "$@"  # slowest 25 in the log
