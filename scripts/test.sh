#!/usr/bin/env bash
# The test suite, in two passes:
#  1. unit and integration tests on the CPU (references, parity with
#     transformers, resume, compression methods, errors), GPU tests left out;
#  2. every GPU test (names starting gpu_) on the emulated CUDA device's
#     memcheck build (emulator/README.md), with LPAF_REQUIRE_GPU=1 so that
#     none can skip. On a machine with a real GPU, LPAF_GPU_TESTS=real runs
#     pass 2 on it instead.
# Then a build of the benchmarks. Set LPAF_REQUIRE_NVCC=1 to make a missing
# nvcc (or a failed emulator build) a build error (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --lib --bins --test it -- --skip gpu_
# The emulated cuBLAS against a double-precision reference (emulator/tests).
bash emulator/tests/run_cublas_check.sh
case "${LPAF_GPU_TESTS:-emulated}" in
    emulated)
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/emulated-gpu-runner.sh" \
            LPAF_EMULATED_GPU=memcheck LPAF_REQUIRE_GPU=1 \
            cargo test --test it -- gpu_
        ;;
    real) LPAF_REQUIRE_GPU=1 cargo test --test it -- gpu_ ;;
    none) echo "test.sh: GPU tests left out (LPAF_GPU_TESTS=none)" ;;
    *) echo "test.sh: LPAF_GPU_TESTS must be emulated, real or none" >&2; exit 2 ;;
esac
# About a minute of structured fuzzing over every loader (no panic, hang or unbounded allocation).
bash scripts/fuzz.sh --short
cargo test --benches --no-run
