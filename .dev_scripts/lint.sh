#!/usr/bin/env bash
# The checks of .pre-commit-config.yaml, run from .venv with no network:
# flake8, isort and yapf (as diffs), codespell. Settings: setup.cfg.
#   bash .dev_scripts/lint.sh          check; exit 1 if any tool complains
#   bash .dev_scripts/lint.sh --fix    sort imports and reformat in place
#                                      first (isort, yapf), then check
# VENV=DIR takes the tools from another environment.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-$ROOT/.venv}/bin"
PATHS=(mmseg_infobatch tools benchmarks tests configs .dev_scripts setup.py)
# codespell also reads the docs and the set-up files; it skips hidden
# folders unless told, and .dev_scripts and .ci are hidden.
TEXT=(docs README.md CHANGELOG.md CITATION.cff pyproject.toml setup.cfg
      .pre-commit-config.yaml .ci)

for tool in flake8 isort yapf codespell; do
    if [ ! -x "$BIN/$tool" ]; then
        echo "lint: $BIN/$tool is missing; install the linters with" \
             "'$BIN/pip install -e \".[tests]\"' (they need Python >= 3.11)" >&2
        exit 2
    fi
done

if [ "${1:-}" = "--fix" ]; then
    "$BIN/isort" -q "${PATHS[@]}" || exit 1
    "$BIN/yapf" -i -r "${PATHS[@]}" || exit 1
fi

failed=()
"$BIN/flake8" "${PATHS[@]}" || failed+=(flake8)
"$BIN/isort" --check-only --diff -q "${PATHS[@]}" || failed+=(isort)
# yapf prints a diff and fails on any file it would change.
"$BIN/yapf" --diff -r "${PATHS[@]}" || failed+=(yapf)
"$BIN/codespell" --check-hidden "${PATHS[@]}" "${TEXT[@]}" || failed+=(codespell)
if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint: ${failed[*]} failed (bash .dev_scripts/lint.sh --fix" \
         "fixes isort and yapf)" >&2
    exit 1
fi
echo "lint: flake8, isort, yapf and codespell are clean"
