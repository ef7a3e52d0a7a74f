#!/usr/bin/env bash
# Structured fuzzing of every loader (examples/fuzz_loaders.rs, stable Rust):
#   scripts/fuzz.sh [N]      N inputs in total (default 1000000), loaders in turn
#   scripts/fuzz.sh --short  about a minute (what scripts/test.sh runs)
# Prints inputs / errors / panics per loader; exits non-zero on any panic,
# hang (one input past 10 s) or allocation over the per-input memory bound.
# Failing inputs are saved under fuzz-failures/. LPAF_FUZZ_SEED picks the
# mutation stream (default 1); inputs are written under /dev/shm when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --example fuzz_loaders
tmp=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
seed="${LPAF_FUZZ_SEED:-1}"
if [ "${1:-}" = "--short" ]; then
    args=(--seconds 60)
else
    args=(--inputs "${1:-1000000}")
fi
LPAF_FUZZ_TMP="$tmp" target/debug/examples/fuzz_loaders "${args[@]}" --seed "$seed" --timeout 10
