#!/usr/bin/env bash
# Cargo runner for the GPU tests on the emulated device's memcheck build
# (emulator/README.md): starts the test binary with AddressSanitizer's
# runtime preloaded, which the instrumented kernels need; cargo itself and
# the compilers run without it.
set -euo pipefail
asan=$(${CXX:-g++} -print-file-name=libasan.so)
export LD_PRELOAD="$asan${LD_PRELOAD:+:$LD_PRELOAD}"
# Leaks: lpaf keeps its module and handle caches for the process's life.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
exec "$@"
