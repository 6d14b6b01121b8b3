#!/usr/bin/env bash
# Run on a CUDA machine after the GPU install route of the README
# (existing env with CUDA torch, `mim install mmcv==2.1.0`, `pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/gpu_check.py "$@"
