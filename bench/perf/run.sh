#!/usr/bin/env bash
# One command for the gateway benchmark: bash bench/perf/run.sh [--quick] [run.py options]
# Prepares wrk (Debian), tierline's venv ($TIERLINE_BENCH_VENV, default /tmp/venv-perf) and
# LiteLLM's venv ($TIERLINE_BENCH_LITELLM_VENV, default /tmp/tierline-bench-litellm), then runs
# bench/perf/run.py. Writes docs/performance.md (full run) or bench/out/perf/quick.md (--quick).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TL_VENV="${TIERLINE_BENCH_VENV:-/tmp/venv-perf}"
LL_VENV="${TIERLINE_BENCH_LITELLM_VENV:-/tmp/tierline-bench-litellm}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk..."
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi
if [ ! -x "$TL_VENV/bin/tierline" ]; then
  echo "creating $TL_VENV (tierline, editable)..."
  python3 -m venv "$TL_VENV"
  "$TL_VENV/bin/pip" install -q -e "$ROOT" py-spy
fi
if [ ! -x "$LL_VENV/bin/litellm" ]; then
  echo "creating $LL_VENV (litellm[proxy])..."
  python3 -m venv "$LL_VENV"
  "$LL_VENV/bin/pip" install -q 'litellm[proxy]' uvloop
fi
export TIERLINE_BENCH_LITELLM_VENV="$LL_VENV"
exec "$TL_VENV/bin/python" "$ROOT/bench/perf/run.py" "$@"
