#!/usr/bin/env bash
# The test suite, in two passes:
#  1. unit and integration tests on the CPU (references, parity with
#     transformers, resume, compression methods, errors), GPU tests left out;
#  2. every GPU test (names starting gpu_) on the emulated CUDA device's
#     memcheck build (emulator/README.md), with LPAF_REQUIRE_GPU=1 so that
#     none can skip. On a machine with a real GPU, LPAF_GPU_TESTS=real runs
#     pass 2 on it instead.
#  3. the CUDA 12 build (README "CUDA 12 or 13": --features cuda12, its own
#     target dir target/cuda12, seeded from target/debug so that only cudarc
#     and lpaf compile again): its kernels, then on the emulated device the
#     tests that launch every kernel (the ops_* modules, backend_core) and the driver
#     check; LPAF_CUDA12_TESTS=all runs every gpu_ test, =none skips it.
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
case "${LPAF_CUDA12_TESTS:-subset}" in
    subset) filters=(ops_ backend_core:: gpu_old_driver_is_a_clear_error) ;;
    all) filters=(gpu_) ;;
    none) filters=() ;;
    *) echo "test.sh: LPAF_CUDA12_TESTS must be subset, all or none" >&2; exit 2 ;;
esac
if [ "${#filters[@]}" -gt 0 ] && [ "${LPAF_GPU_TESTS:-emulated}" != none ]; then
    if [ ! -d target/cuda12/debug ] && [ -d target/debug/deps ]; then
        mkdir -p target/cuda12/debug
        cp -a target/debug/deps target/debug/build target/debug/.fingerprint target/cuda12/debug/
    fi
    runner=()
    [ "${LPAF_GPU_TESTS:-emulated}" = real ] || runner=(env
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/emulated-gpu-runner.sh"
        LPAF_EMULATED_GPU=memcheck)
    "${runner[@]}" env CARGO_TARGET_DIR=target/cuda12 LPAF_REQUIRE_GPU=1 \
        cargo test --no-default-features --features cuda12 --test it -- "${filters[@]}"
fi
cargo test --benches --no-run
