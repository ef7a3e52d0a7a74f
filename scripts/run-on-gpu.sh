#!/usr/bin/env bash
# The one prepared GPU run (issues 9 and 10): on the GPU machine, from the
# repository root, where there is no Rust. Build the bundle first on a
# machine with Rust: scripts/bundle-for-gpu.sh (dist/lpaf, dist/lpaf-tests).
# Stages, in order, each under its own time limit so that the whole fits one
# device call (~9 minutes); pick some with LPAF_GPU_STAGES="tests train":
#   tests      every integration test with LPAF_REQUIRE_GPU=1 (a missing GPU
#              is a failure, not a skip)                         (240 s)
#   sanitizer  compute-sanitizer memcheck on the operation tests (ops_)  (120 s)
#   kernels    lpaf bench kernels (ceilings measured in the same run)     (90 s)
#   train      lpaf bench train, dense at bf16 / TF32 / fp32 with the GEMM
#              ceiling, then scripts/torch_bench_step.py's dense step, in
#              this same call: report the ratio                          (150 s)
#   nsys       nsys profile of dense bf16 steps: the ten largest kernels
#              by time                                                   (90 s)
# Extra arguments go to the test executable (a filter such as ops_topk, or
# --skip NAME). When $OUT is set, every stage's output is also written there
# (gpu-tests.log, sanitizer.log, bench-kernels.log, engine-train.jsonl,
# bench-train.log, torch-step.txt, nsys-kernels.txt).
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

stages="${LPAF_GPU_STAGES:-tests sanitizer kernels train nsys}"
want() { case " $stages " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
failed=()
# stage NAME SECONDS LOG COMMAND...: runs it under a time limit, logged.
stage() {
    local name="$1" secs="$2" log="$3"
    shift 3
    echo "== $name (at most ${secs} s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$secs" "$@" 2>&1 | logto "$log"
    local st=${PIPESTATUS[0]}
    echo "== $name: exit $st after $((SECONDS - t0)) s"
    [ "$st" -eq 0 ] || failed+=("$name (exit $st)")
}

if want tests; then
    LPAF_REQUIRE_GPU=1 stage tests 240 gpu-tests.log dist/lpaf-tests --test-threads=1 "$@"
fi
if want sanitizer; then
    if command -v compute-sanitizer >/dev/null 2>&1; then
        LPAF_REQUIRE_GPU=1 stage sanitizer 120 sanitizer.log \
            compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 \
            dist/lpaf-tests ops_ --test-threads=1
    else
        echo "== sanitizer: compute-sanitizer is not on PATH, skipped"
        failed+=("sanitizer (missing)")
    fi
fi
if want kernels; then
    stage kernels 90 bench-kernels.log dist/lpaf bench kernels
fi
if want train; then
    json="${OUT:-/tmp}/engine-train.jsonl"
    stage train 100 bench-train.log dist/lpaf bench train --methods dense \
        --precisions bf16,tf32,f32 --json "$json"
    if command -v python3 >/dev/null 2>&1; then
        stage torch-step 50 torch-step.txt python3 scripts/torch_bench_step.py \
            --variants dense --precisions bf16,tf32,fp32
    else
        failed+=("torch-step (no python3)")
    fi
fi
if want nsys; then
    if command -v nsys >/dev/null 2>&1; then
        rep="${OUT:-/tmp}/lpaf-step"
        stage nsys 70 nsys.log nsys profile --force-overwrite true --trace cuda -o "$rep" \
            dist/lpaf bench train --methods dense --precisions bf16 --repeats 5
        stage nsys-stats 20 nsys-kernels.txt sh -c \
            "nsys stats --report cuda_gpu_kern_sum --format table '$rep.nsys-rep' | head -16"
    else
        echo "== nsys: not on PATH, skipped"
        failed+=("nsys (missing)")
    fi
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "== summary: failed or cut short: ${failed[*]}"
    exit 1
fi
echo "== summary: every stage passed ($stages)"
