#!/usr/bin/env bash
# The main job: run the context-scaling matrix and write the reports.
#
#   bash harness/run.sh [extra cargo test arguments, e.g. -- gemma3_tools_27b::]
#
# - With OLLAMA_HOST set (a real Ollama), runs the table in O3_MATRIX (default: the user's
#   harness/matrix.csv) against it.
# - Without OLLAMA_HOST, sets up the reference backend (upstream llama.cpp + two small real
#   models), starts the reference server, runs the reference cells (harness/reference.csv), and
#   stops the server afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ -n "${OLLAMA_HOST:-}" ]; then
  echo "[run] running ${O3_MATRIX:-harness/matrix.csv} against Ollama at $OLLAMA_HOST" >&2
  exec cargo test --release --test context_scaling "$@"
fi

bash harness/refserver.sh start
trap 'bash harness/refserver.sh stop' EXIT
eval "export $(bash harness/refserver.sh env)"
export O3_MATRIX="${O3_MATRIX:-harness/reference.csv}"
echo "[run] running $O3_MATRIX against the reference server at $OLLAMA_HOST" >&2
cargo test --release --test context_scaling "$@"
