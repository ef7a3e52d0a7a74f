#!/usr/bin/env bash
# Builds and runs the standalone check of the emulated cuBLAS
# (emulator/cublas.cpp) with fake runtime functions; no GPU, no driver needed.
# Also builds libcublas.so alone and checks it exports the cuBLAS API.
# Runs the check twice: the default path, then the portable kernel with two
# worker threads (results must be the same bits).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
emu="$(dirname "$here")"
out="$(mktemp -d "${TMPDIR:-/tmp}/lpaf_cublas_check.XXXXXX")"
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O3 -ffp-contract=off -pthread -Wall -Wextra)

g++ "${flags[@]}" -fPIC -fvisibility=hidden -shared "$emu/cublas.cpp" -o "$out/libcublas.so"
syms="$(nm -D --defined-only "$out/libcublas.so" | awk '{print $3}')"
missing=0
for s in cublasCreate_v2 cublasDestroy_v2 cublasSetStream_v2 cublasGetStream_v2 \
    cublasSetMathMode cublasGetMathMode cublasSetPointerMode_v2 cublasGetPointerMode_v2 \
    cublasSetWorkspace_v2 cublasGetStatusString cublasGetStatusName cublasGetVersion_v2 \
    cublasGemmStridedBatchedEx cublasGemmEx cublasGemmBatchedEx cublasSgemm_v2 \
    cublasSgemmStridedBatched; do
    grep -qx "$s" <<<"$syms" || { echo "libcublas.so does not export $s"; missing=1; }
done
# Only the API is exported strongly (weak C++ template instances may appear).
leaked="$(nm -D --defined-only "$out/libcublas.so" | awk '$2 == "T" && $3 !~ /^cublas/ {print $3}')"
if [ -n "$leaked" ]; then echo "libcublas.so exports non-cuBLAS symbols:"; echo "$leaked"; missing=1; fi
[ "$missing" = 0 ] || { echo "0 passed, 1 failed"; exit 1; }

g++ "${flags[@]}" "$emu/cublas.cpp" "$here/cublas_check.cpp" -o "$out/cublas_check"
echo "== default kernel, LPAF_EMU_THREADS=${LPAF_EMU_THREADS:-1}"
"$out/cublas_check"
echo "== portable kernel, LPAF_EMU_THREADS=2"
LPAF_EMU_BLAS_GENERIC=1 LPAF_EMU_THREADS=2 LPAF_CHECK_TIMING_N=256 "$out/cublas_check"
