#!/usr/bin/env bash
# The GPU check in one command on a CUDA machine that cannot reach a package
# registry (an air-gapped cluster node, say), from the bundle that
# benchmarks/gpu_bundle.sh prepared and that was copied to .gpu_bundle/:
#   1. install the bundle's wheels into $WORK/site (python3's own packages
#      stay as they are);
#   2. build mmcv 2.1.0 with its CPU ops, in place, with all cores (about
#      2 minutes on 16): mmseg imports mmcv.ops, but UperNet runs no mmcv
#      op, and a CUDA-op build would take far longer than the check itself.
#      Skipped where this python already imports mmcv.ops;
#   3. run benchmarks/gpu_check.py with this script's arguments (about 3
#      minutes on one modern GPU).
# Everything it prints also goes to $OUT/gpu_check.log when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${BUNDLE:-.gpu_bundle}"
WORK="${WORK:-/tmp/infobatch_gpu}"  # wheels in $WORK/site, mmcv built in $WORK
SITE="$WORK/site"
PY="${PYTHON:-python3}"
if [ ! -f "$BUNDLE/mmcv-2.1.0.tar.gz" ]; then
    echo "gpu_offline_check: no $BUNDLE/mmcv-2.1.0.tar.gz. Run" \
         "benchmarks/gpu_bundle.sh where pip can download, then copy" \
         "$BUNDLE to this machine." >&2
    exit 2
fi
mkdir -p "$WORK"
LOG="${OUT:-$WORK}/gpu_check.log"
(
    set -euo pipefail
    start=$(date +%s)
    "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --disable-pip-version-check --upgrade --target "$SITE" "$BUNDLE"/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if "$PY" -c 'import mmcv.ops' >/dev/null 2>&1; then
        echo "[gpu_offline_check] mmcv with ops found: no build"
    else
        MMCV_SRC="$WORK/mmcv-2.1.0"
        if [ ! -d "$MMCV_SRC" ]; then
            tar -xzf "$BUNDLE/mmcv-2.1.0.tar.gz" -C "$WORK"
        fi
        # Hiding the GPU makes mmcv's setup.py build the CPU ops only.
        (cd "$MMCV_SRC" && CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 \
            FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$PY" setup.py -q build_ext --inplace >/dev/null)
        export PYTHONPATH="$MMCV_SRC:$PYTHONPATH"
    fi
    "$PY" -c 'import mmcv, mmcv.ops, mmengine, mmseg, torch; print(
        f"[gpu_offline_check] mmcv {mmcv.__version__} (ops), mmengine "
        f"{mmengine.__version__}, mmseg {mmseg.__version__}, torch "
        f"{torch.__version__}, CUDA {torch.cuda.is_available()}")'
    echo "[gpu_offline_check] set-up took $(( $(date +%s) - start )) s"
    "$PY" benchmarks/gpu_check.py "$@"
) 2>&1 | tee "$LOG"
