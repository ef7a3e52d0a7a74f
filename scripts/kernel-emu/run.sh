#!/usr/bin/env bash
# Runs kernels/*.cu on the CPU through the emulated device's scheduler
# (emulator/fiber.cpp, via cuda_emu.h here) and
# checks them against reference loops. No GPU or nvcc needed: a host-side
# check of index math, tails, bounds and reduction logic. It says nothing
# about device-only behaviour (coalescing, the real shuffle hardware, the
# device's libm), which the GPU tests in src/backend/ops/*/tests.rs cover.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/lpaf-kernel-emu"
g++ -std=c++20 -O1 -ffp-contract=off -pthread -Wall -Wno-unused-function -Wno-unknown-pragmas \
    -I "$here/../../kernels" -o "$out" "$here/emulate.cpp" "$here/../../emulator/fiber.cpp"
"$out"
