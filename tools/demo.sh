#!/usr/bin/env bash
# Command 1 of 2: set up .venv (once) and run the embedded InfoBatch demo.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/bootstrap_env.sh"
cd "$ROOT"
exec python tools/misc/demo.py "$@"
