#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 nvcc from PyPI into the project-local venv
# .venv-cuda, where build.rs finds it. Newer PTX would not load on a CUDA 13.0
# driver, and pip pulls newer parts unless all five are pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-cuda/bin/python ]; then
    "$PY" -m venv .venv-cuda
fi
.venv-cuda/bin/python -m pip install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 \
    nvidia-nvvm==13.0.88 \
    nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cccl==13.0.85
NVCC=$(ls .venv-cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc | head -n 1)
"$NVCC" --version | tail -n 2
echo "nvcc installed at $NVCC"
