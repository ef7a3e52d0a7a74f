#!/usr/bin/env bash
# Runs kernels/*.cu on the CPU through a small CUDA emulation (cuda_emu.h) and
# checks them against reference loops. No GPU or nvcc needed: a host-side
# check of index math, tails, bounds and reduction logic. It says nothing
# about device-only behaviour (coalescing, the real shuffle hardware, the
# device's libm), which the GPU tests in tests/it/gpu_ops.rs cover.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/lpaf-kernel-emu"
g++ -std=c++20 -O1 -ffp-contract=off -pthread -Wall -Wno-unused-function -Wno-unknown-pragmas -o "$out" "$here/emulate.cpp"
"$out"
