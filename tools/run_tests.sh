#!/usr/bin/env bash
# Command 2 of 2: set up .venv (once) and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/bootstrap_env.sh"
cd "$ROOT"
# With arguments, they replace the default target: a file, -k, -x ...
exec python -m pytest -p no:cacheprovider "${@:-tests}"
