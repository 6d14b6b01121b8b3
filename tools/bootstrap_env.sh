#!/usr/bin/env bash
# Create or reuse the project's virtual environment at .venv (CPU only).
#
# Sourced by tools/demo.sh and tools/run_tests.sh, so whichever runs first
# builds the environment and the other reuses it. A stamp file records the
# inputs that shaped the environment; nothing is reinstalled while it matches.
#
# .dev_scripts/version_matrix.py builds its other version sets with this
# same script, through three variables: INFOBATCH_VENV (where),
# INFOBATCH_TORCH (the torch pin) and INFOBATCH_PINS (more pins, held as
# pip constraints through every install, e.g. "numpy==1.26.4").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INFOBATCH_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

# Versions measured to work together on a CPU-only machine (README, Install).
TORCH_SPEC="${INFOBATCH_TORCH:-torch==2.13.0}"
PINS="${INFOBATCH_PINS:-}"
MMCV_SPEC="mmcv==2.1.0"
MMCV_VERSION="${MMCV_SPEC#mmcv==}"
# mmcv wheels with ops, one folder per torch version (shared by every venv
# this script builds).
MMCV_WHEELS="${MMCV_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg_infobatch/wheels}"
# mmcv 2.1.0's setup.py imports pkg_resources (gone in setuptools 81);
# torch 2.13 wants setuptools >= 77.0.3.
SETUPTOOLS_SPEC="setuptools>=77.0.3,<81"

stamp_inputs() {
    cat "$ROOT/pyproject.toml" "$ROOT/tools/bootstrap_env.sh"
    echo "$TORCH_SPEC $PINS"
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
    echo "[bootstrap] installing into $VENV ($TORCH_SPEC${PINS:+ $PINS})"
    # Pin torch first, and hold it through every later install: an
    # unpinned 'torch' would pull a multi-GB CUDA build.
    CONSTRAINTS="$VENV/constraints.txt"
    printf '%s\n' "$TORCH_SPEC" $PINS > "$CONSTRAINTS"
    INSTALL=("${PIP[@]}" install -c "$CONSTRAINTS")
    "${INSTALL[@]}" -q "$SETUPTOOLS_SPEC" wheel ninja
    "${INSTALL[@]}" -q "$TORCH_SPEC"
    if ! "$VENV/bin/python" -c 'import mmcv.ops' >/dev/null 2>&1; then
        # No CPU wheel of mmcv with compiled ops exists on PyPI: build it
        # once per torch version, into a folder of wheels keyed by that
        # version. pip's own cache is not used for it: it would hand a
        # wheel built against another torch to this one, whose ops then
        # fail to load (undefined symbol).
        TORCH_KEY="$("$VENV/bin/python" -c 'import sys, torch
print("torch-%s-cp%d%d" % ((torch.__version__,) + sys.version_info[:2]))')"
        WHEELS="$MMCV_WHEELS/$TORCH_KEY"
        mkdir -p "$WHEELS"
        "${INSTALL[@]}" -q mmengine==0.10.7 "numpy" "opencv-python" \
            addict packaging Pillow pyyaml yapf
        if ! ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
            echo "[bootstrap] building $MMCV_SPEC with ops against" \
                "$TORCH_KEY into $WHEELS (once; 3-60 min on 2 cores)"
            MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
                "${PIP[@]}" wheel -q --no-deps --no-build-isolation \
                --no-binary mmcv --no-cache-dir -w "$WHEELS" "$MMCV_SPEC"
        fi
        "${INSTALL[@]}" -q --force-reinstall --no-deps \
            "$WHEELS"/mmcv-$MMCV_VERSION-*.whl
        if ! "$VENV/bin/python" -c 'import mmcv.ops'; then
            echo "[bootstrap] mmcv.ops does not load with $TORCH_KEY:" \
                "delete $WHEELS and run this again to rebuild it" >&2
            exit 1
        fi
    fi
    "${INSTALL[@]}" -q --no-build-isolation -e "$ROOT[tests,demo]"
    stamp_inputs | sha256sum | cut -d' ' -f1 > "$STAMP"
    echo "[bootstrap] done"
fi
export PATH="$VENV/bin:$PATH"
