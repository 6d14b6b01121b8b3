#!/usr/bin/env bash
# Prepare what the GPU check needs on a machine that cannot reach a package
# registry but has CUDA torch and no OpenMMLab packages (an air-gapped
# cluster node, say; PY_VERSION names its Python, 3.12 by default). Run it
# where pip can download; it fills .gpu_bundle/ (git-ignored, about 6 MB):
#   - pure-Python wheels of mmengine, mmsegmentation and their missing deps;
#   - the mmcv 2.1.0 source, built there by benchmarks/gpu_offline_check.sh;
#   - setuptools < 81, which mmcv 2.1.0's setup.py needs (pkg_resources).
# Then copy .gpu_bundle along with the working tree and run, on the GPU
# machine:
#   bash benchmarks/gpu_offline_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu_bundle
PY_VERSION="${PY_VERSION:-3.12}"
mkdir -p "$BUNDLE"
PURE=(mmengine==0.10.7 mmsegmentation==1.2.2 addict==2.4.0 yapf==0.43.0
      platformdirs termcolor ftfy prettytable wcwidth setuptools==80.9.0)
python -m pip download -q --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp -d "$BUNDLE" "${PURE[@]}"
# The mmcv source straight from PyPI: `pip download` would run its setup.py,
# which needs torch and setuptools < 81 just to name itself.
python - "$BUNDLE" <<'PY'
import re, sys, urllib.request
index = urllib.request.urlopen('https://pypi.org/simple/mmcv/',
                               timeout=60).read().decode()
url = re.search(r'href="([^"]*/mmcv-2\.1\.0\.tar\.gz)[^"]*"', index).group(1)
urllib.request.urlretrieve(url, f'{sys.argv[1]}/mmcv-2.1.0.tar.gz')
PY
ls -l "$BUNDLE"
echo "[gpu_bundle] ready: copy $BUNDLE to the GPU machine, then run benchmarks/gpu_offline_check.sh"
