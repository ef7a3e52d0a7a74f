#!/usr/bin/env bash
# Mutation check of the emulated-GPU tests (run by hand; it edits sources in
# place and puts them back): each mutation below is a bug the GPU tests must
# catch on the emulated device (emulator/README.md). For each: apply it,
# rebuild, run the GPU tests named beside it on the memcheck build, expect a
# failure, restore the file. Prints one line per mutation and exits non-zero
# if any mutation survived. Takes ~15 minutes on 2 cores (each kernel
# mutation rebuilds the fatbins and the emulator).
#
# Usage: scripts/mutation-check.sh [NAME...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

# name | file | test filter; the edit itself is in apply_mutation below.
MUTATIONS=(
  "kernel-tail-off-by-one|kernels/elementwise.cu|gpu_cast_matches_cpu_bit_for_bit"
  "removed-syncthreads|kernels/reduce.cu|gpu_sum_squares_is_close_and_deterministic"
  "read-one-past-the-end|kernels/reduce.cu|gpu_sum_squares_is_close_and_deterministic"
  "wrong-leading-dimension|src/backend/ops/gemm/cuda.rs|gpu_gemm_linear_layer_shapes"
  "k0-gemm-ld-unfixed|src/backend/ops/gemm/cuda.rs|gemm_with_empty_dimensions::gpu_on_cuda"
)

apply_mutation() {
  python3 - "$1" "$2" <<'PY'
import sys
name, path = sys.argv[1], sys.argv[2]
edits = {
    "kernel-tail-off-by-one": (
        "for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = f32_to_bf16_bits(x[i]);",
        "for (u64 i = (n4 << 2) + start; i + 1 < n; i += stride) y[i] = f32_to_bf16_bits(x[i]);"),
    "removed-syncthreads": (
        "    if (lane == 0) sh[warp] = acc;\n    __syncthreads();\n",
        "    if (lane == 0) sh[warp] = acc;\n"),
    "read-one-past-the-end": (
        "for (u64 i = (n4 << 2) + start; i < n; i += stride) acc += (double)x[i] * (double)x[i];",
        "for (u64 i = (n4 << 2) + start; i <= n; i += stride) acc += (double)x[i] * (double)x[i];"),
    "wrong-leading-dimension": ("                lda as i32,", "                (lda + 1) as i32,"),
    "k0-gemm-ld-unfixed": ("        let (lda, ldb) = if g.k == 0 {", "        let (lda, ldb) = if false {"),
}
old, new = edits[name]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(f"mutation-check: {name}: expected one match in {path}, found {s.count(old)}")
open(path, "w").write(s.replace(old, new))
PY
}

want=("$@")
log_dir=$(mktemp -d)
restore=()
cleanup() { for f in "${restore[@]}"; do git checkout -q -- "$f"; done; }
trap cleanup EXIT

survived=0
for m in "${MUTATIONS[@]}"; do
  IFS='|' read -r name file filter <<<"$m"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  if ! git diff --quiet -- "$file"; then
    echo "mutation-check: $file has uncommitted changes; commit or stash them first" >&2
    exit 2
  fi
  apply_mutation "$name" "$file"
  restore+=("$file")
  log="$log_dir/$name.log"
  if ! LPAF_REQUIRE_NVCC=1 cargo test --test it --no-run >"$log" 2>&1; then
    echo "$name: build failed (see $log)"; survived=1
  elif CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/scripts/emulated-gpu-runner.sh" \
       LPAF_EMULATED_GPU=memcheck LPAF_REQUIRE_GPU=1 \
       cargo test --test it -- "$filter" >>"$log" 2>&1; then
    echo "$name: SURVIVED ($filter passed)"; survived=1
  else
    why=$(grep -m1 -E "SUMMARY: AddressSanitizer|lpaf emulated GPU:|panicked at|assert" "$log" -A1 | tr '\n' ' ' | cut -c1-220)
    echo "$name: caught by $filter — $why"
  fi
  git checkout -q -- "$file"
done
rm -rf "$log_dir"
exit $survived
