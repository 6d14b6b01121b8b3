#!/usr/bin/env bash
# Create or reuse the project's virtual environment at .venv (CPU only).
#
# Sourced by tools/demo.sh and tools/run_tests.sh, so whichever runs first
# builds the environment and the other reuses it. A stamp file records the
# inputs that shaped the environment; nothing is reinstalled while it matches.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

# Versions measured to work together on a CPU-only machine (README, Install).
TORCH_SPEC="torch==2.13.0"
MMCV_SPEC="mmcv==2.1.0"
# mmcv 2.1.0's setup.py imports pkg_resources (gone in setuptools 81);
# torch 2.13 wants setuptools >= 77.0.3.
SETUPTOOLS_SPEC="setuptools>=77.0.3,<81"

stamp_inputs() {
    cat "$ROOT/pyproject.toml" "$ROOT/tools/bootstrap_env.sh"
    "$VENV/bin/python" -c 'import sys; print(sys.version)'
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
STAMP="$VENV/.mmseg_infobatch_stamp"
WANT="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "[bootstrap] reusing $VENV (up to date)"
else
    echo "[bootstrap] installing into $VENV"
    "${PIP[@]}" install -q "$SETUPTOOLS_SPEC" wheel ninja
    # Pin torch first: an unpinned 'torch' would pull a multi-GB CUDA build.
    "${PIP[@]}" install -q "$TORCH_SPEC"
    if ! "$VENV/bin/python" -c 'import mmcv.ops' >/dev/null 2>&1; then
        # No CPU wheel of mmcv with compiled ops exists on PyPI: build it
        # (about 10 min once; pip caches the wheel for later venvs).
        "${PIP[@]}" install -q mmengine==0.10.7 "numpy" "opencv-python" \
            addict packaging Pillow pyyaml yapf
        echo "[bootstrap] building $MMCV_SPEC with ops (first time ~10 min)"
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
            "${PIP[@]}" install -q --no-build-isolation "$MMCV_SPEC"
    fi
    "${PIP[@]}" install -q --no-build-isolation -e "$ROOT[tests,demo]"
    stamp_inputs | sha256sum | cut -d' ' -f1 > "$STAMP"
    echo "[bootstrap] done"
fi
export PATH="$VENV/bin:$PATH"
