#!/usr/bin/env bash
# Prepare what the GPU check needs on a machine that cannot reach a package
# registry but has CUDA torch and no OpenMMLab packages (an air-gapped
# cluster node, say; PY_VERSION names its Python, 3.12 by default). Run it
# where pip can download, from pip's configured index (a mirror or proxy
# works as it is); it fills .gpu_bundle/ (git-ignored, about 6 MB):
#   - pure-Python wheels of mmengine, mmsegmentation and their missing deps;
#   - the mmcv 2.1.0 source, built there by benchmarks/gpu_offline_check.sh;
#   - setuptools < 81, which mmcv 2.1.0's setup.py needs (pkg_resources).
# Then copy .gpu_bundle along with the working tree and run, on the GPU
# machine:
#   bash benchmarks/gpu_offline_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="${BUNDLE:-$ROOT/.gpu_bundle}"
PY_VERSION="${PY_VERSION:-3.12}"
# The project's .venv has torch and setuptools < 81, which pip needs to
# read mmcv's source distribution (its setup.py imports both).
source "$ROOT/tools/bootstrap_env.sh"
PIP=(python -m pip --disable-pip-version-check)
mkdir -p "$BUNDLE"
PURE=(mmengine==0.10.7 mmsegmentation==1.2.2 addict==2.4.0 yapf==0.43.0
      platformdirs termcolor ftfy prettytable wcwidth setuptools==80.9.0)
"${PIP[@]}" download -q --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp -d "$BUNDLE" "${PURE[@]}"
"${PIP[@]}" download -q --no-deps --no-binary=mmcv --no-build-isolation \
    -d "$BUNDLE" mmcv==2.1.0
ls -l "$BUNDLE"
echo "[gpu_bundle] ready: copy $BUNDLE to the GPU machine, then run benchmarks/gpu_offline_check.sh"
