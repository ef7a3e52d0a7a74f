#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, where there is no Rust:
# the bundled integration tests with LPAF_REQUIRE_GPU=1 (a missing GPU is a
# failure, not a skip), then `lpaf bench kernels`. Build the bundle first on
# a machine with Rust: scripts/bundle-for-gpu.sh (dist/lpaf, dist/lpaf-tests).
#
# Extra arguments go to the test executable (a filter such as ops_topk, or
# --skip NAME). When $OUT is set, the output is also written to
# $OUT/gpu-tests.log and $OUT/bench-kernels.log.
set -uo pipefail
cd "$(dirname "$0")/.."

for f in dist/lpaf dist/lpaf-tests; do
    if [ ! -x "$f" ]; then
        echo "error: $f is missing: run scripts/bundle-for-gpu.sh on a machine with Rust and nvcc" >&2
        exit 2
    fi
done

logto() {
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT"
        tee "$OUT/$1"
    else
        cat
    fi
}

# ---- cuBLAS / cuBLASLt on the library path ---------------------------------------
# The binaries load libcuda, libcublas and libcublasLt at run time (dlopen).
libdirs=()
add_dir() {
    local d="$1"
    [ -d "$d" ] || return 0
    ls "$d"/libcublas.so* "$d"/libcublasLt.so* >/dev/null 2>&1 || return 0
    for seen in "${libdirs[@]:-}"; do [ "$seen" = "$d" ] && return 0; done
    libdirs+=("$d")
}
for d in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 \
    /usr/local/lib/python3*/*-packages/nvidia/*/lib /usr/lib/python3/dist-packages/nvidia/*/lib \
    /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib; do
    add_dir "$d"
done
if command -v python3 >/dev/null 2>&1; then
    # pip wheels: site-packages/nvidia/<pkg>/lib (CUDA 13: nvidia/cu13/lib).
    while IFS= read -r d; do add_dir "$d"; done < <(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
for root in roots:
    for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(lib)
PY
    )
    if [ "${#libdirs[@]}" -eq 0 ]; then
        prefix=$(python3 -c 'import sys; print(sys.prefix)' 2>/dev/null || true)
        if [ -n "$prefix" ]; then
            while IFS= read -r f; do add_dir "$(dirname "$f")"; done < <(find "$prefix" -name 'libcublas.so*' 2>/dev/null)
        fi
    fi
fi
if [ "${#libdirs[@]}" -eq 0 ]; then
    echo "warning: no libcublas.so* found (looked in /usr/local/cuda*/lib64, /usr/lib/x86_64-linux-gnu and python's nvidia packages); the CUDA backend will report it" >&2
else
    joined=$(IFS=:; echo "${libdirs[*]}")
    export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

echo "== nvidia-smi -L"
nvidia-smi -L || echo "warning: nvidia-smi failed" >&2

echo "== tests (LPAF_REQUIRE_GPU=1)"
LPAF_REQUIRE_GPU=1 dist/lpaf-tests --test-threads=1 "$@" 2>&1 | logto gpu-tests.log
tests_status=${PIPESTATUS[0]}

echo "== lpaf bench kernels"
dist/lpaf bench kernels 2>&1 | logto bench-kernels.log
bench_status=${PIPESTATUS[0]}

echo "== summary: tests exit $tests_status, bench kernels exit $bench_status"
if [ "$tests_status" -ne 0 ] || [ "$bench_status" -ne 0 ]; then
    exit 1
fi
