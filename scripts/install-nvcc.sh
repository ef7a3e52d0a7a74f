#!/usr/bin/env bash
# Installs the pinned CUDA toolchain from PyPI into a project-local venv,
# where build.rs finds it.
#   scripts/install-nvcc.sh      CUDA 13.0 nvcc into .venv-cuda (the default build)
#   scripts/install-nvcc.sh 12   the same, plus ptxas 12.0 into .venv-cuda12 (the
#                                `--features cuda12` build; also LPAF_CUDA=12)
# Newer PTX would not load on a CUDA 13.0 driver, and pip pulls newer parts
# unless all five are pinned. PyPI has no nvcc 12, only its ptxas: the CUDA 12
# build compiles with nvcc 13.0's front end to PTX ISA 8.0 and assembles with
# ptxas 12.0, whose cubins and PTX load on R525+ drivers (build.rs,
# Toolchain::Split). A full CUDA 12 toolkit on PATH or CUDA_HOME is used
# instead when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA=${1:-${LPAF_CUDA:-13}}
case "$CUDA" in 12|13) ;; *) echo "install-nvcc.sh: expected 12 or 13, got '$CUDA'" >&2; exit 2 ;; esac
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
if [ "$CUDA" = 12 ]; then
    if [ ! -x .venv-cuda12/bin/python ]; then
        "$PY" -m venv .venv-cuda12
    fi
    .venv-cuda12/bin/python -m pip install --quiet --disable-pip-version-check \
        nvidia-cuda-nvcc-cu12==12.0.140
    PTXAS=$(ls .venv-cuda12/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas | head -n 1)
    "$PTXAS" --version | tail -n 1
    echo "ptxas 12.0 installed at $PTXAS (CUDA 12 build: cargo build --no-default-features --features cuda12)"
fi
