#!/usr/bin/env bash
# The test suite: unit and integration tests (CPU references, parity with
# transformers, resume, compression methods, errors; GPU tests skip without a
# GPU, or fail with LPAF_REQUIRE_GPU=1), and a build of the benchmarks.
# Set LPAF_REQUIRE_NVCC=1 to make a missing nvcc a build error (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --lib --bins --test it
cargo test --benches --no-run
