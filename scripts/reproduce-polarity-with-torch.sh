#!/usr/bin/env bash
# The accuracy table on the sentence-polarity data (Pang & Lee, 4,000
# sentences) with MiniLM-L6: dense fine-tuning, every compression method of the
# engine at each kept ratio and seed, and the PyTorch reference
# (scripts/torch_reference.py) of movement pruning and LoSparse on the same
# split, seeds and recipes. Meant for the GPU machine (no Rust there: build
# dist/lpaf with scripts/bundle-for-gpu.sh first); runs on the CPU too.
#
# The engine rows alone are the sweep sweeps/polarity.toml (scripts/reproduce-polarity.sh);
# this script also runs the PyTorch reference on the same split, seeds and recipes.
#
# Usage: scripts/reproduce-polarity-with-torch.sh [options]
#   --lpaf PATH          engine binary (default: dist/lpaf if present, else target/release/lpaf)
#   --model DIR          pre-trained BERT directory (default: ${LPAF_CACHE:-$HOME/.cache/lpaf}/minilm;
#                        an F16 copy is fine: the engine loads F16, PyTorch loads it as float32)
#   --polarity CSV       the polarity CSV (default: ${LPAF_CACHE:-$HOME/.cache/lpaf}/polarity/polarity.csv)
#   --out DIR            output folder (default: runs/polarity; runs/polarity-quick with --quick)
#   --seeds "1 2 3"      seeds (default "1 2 3")
#   --ratios "0.2 0.1"   kept ratios (default "0.2 0.1")
#   --methods "..."      engine methods (default "movement magnitude svd losparse lpaf";
#                        soft_movement costs as much as movement: add it explicitly)
#   --torch-methods "…"  PyTorch reference methods (default "movement losparse"; magnitude also exists)
#   --no-torch           skip the PyTorch reference
#   --quick              smoke test: first seed only, ratio 0.1, --steps 30 unless --steps is given
#   --epochs-scale X     multiply every recipe's epochs by X (default 1: finetune 3 epochs,
#                        single-stage methods 10, LPAF 5 + 5)
#   --steps N            N optimizer steps for every run instead (LPAF: N + N)
#   --max-train-rows N   first N training rows only (passed to the engine and the reference)
#   --batch-size N       override the recipes' batch size (32)
#   --precision P        f32 | tf32 | bf16 for every run (default: the recipes', f32)
#   --device D           auto | cpu | cuda (default auto)
#   --jobs N             runs at once (default 1; >1 shares the GPU, so times and samples/s
#                        are contended and only accuracies stay comparable)
#   --time-budget SECS   start no run that would end after SECS from the start of this call
#                        (estimated); the rest is listed as "not run" and a later call with the
#                        same options continues (finished runs are kept and skipped)
#   --force              rerun runs that already finished
#   --dry-run            print the plan, the commands and the estimate; run nothing
#   --python PY          interpreter with torch + transformers (default: $PYTHON or python3)
#
# Layout of OUT: split/{train,dev}.csv; finetune-s{S}/ (lpaf finetune: the dense row is its
# final model, best/ is the SVD start); engine-{method}-k{R}-s{S}/ (lpaf compress);
# pytorch-{method}-k{R}-s{S}/ (torch_reference.py); logs/{run}.{want,cmd,log,rc,wall,jobs};
# results.jsonl and table.md (rebuilt from every run under OUT at the end of each call).
# A failed run is reported as "failed" with its log path; the table is still written.
#
# Budget (MiniLM, 3,600 training rows, batch 32, sequence 64 ⇒ 113 steps/epoch): the defaults
# are 3 × 339 fine-tuning steps + 5 methods × 2 ratios × 3 seeds × 1,130 steps (engine; LPAF
# 565 + 565) + 2 × 2 × 3 × 1,130 (PyTorch) ≈ 48,000 steps in 45 runs: about 20 min on one
# H100 if the engine takes ~15 ms and PyTorch ~20 ms per step (guesses; nobody has timed
# MiniLM on the GPU yet). The script prints its estimate at the start and, once runs are
# timed, an ETA from their measured speed after every run. A device command is limited to
# 10 minutes, so split the work over calls that continue each other, e.g.
#     scripts/reproduce-polarity-with-torch.sh --seeds 1 --time-budget 540          # clean timings
#     scripts/reproduce-polarity-with-torch.sh --seeds "2 3" --jobs 2 --time-budget 540   # repeat until
#                                                    # nothing is "not run"; times contended
# (the table takes times from runs that had the GPU alone when there are any), or shorten
# every run with --epochs-scale 0.5 (half the epochs of every recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ORIG_ARGS=("$@")

CACHE=${LPAF_CACHE:-$HOME/.cache/lpaf}
LPAF=""
MODEL="$CACHE/minilm"
POLARITY="$CACHE/polarity/polarity.csv"
OUT=""
SEEDS="1 2 3"
RATIOS="0.2 0.1"
METHODS="movement magnitude svd losparse lpaf"
TORCH_METHODS="movement losparse"
NO_TORCH=0
QUICK=0
EPOCHS_SCALE=1
STEPS=""
MAX_ROWS=""
BATCH=""
PRECISION=""
DEVICE=auto
JOBS=1
TIME_BUDGET=0
FORCE=0
DRY_RUN=0
PY=${PYTHON:-python3}
SEEDS_SET=0
RATIOS_SET=0

die() { echo "reproduce-polarity-with-torch.sh: error: $*" >&2; exit 2; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --lpaf) need "$@"; LPAF=$2; shift 2 ;;
        --model) need "$@"; MODEL=$2; shift 2 ;;
        --polarity) need "$@"; POLARITY=$2; shift 2 ;;
        --out) need "$@"; OUT=$2; shift 2 ;;
        --seeds) need "$@"; SEEDS=$2; SEEDS_SET=1; shift 2 ;;
        --ratios) need "$@"; RATIOS=$2; RATIOS_SET=1; shift 2 ;;
        --methods) need "$@"; METHODS=$2; shift 2 ;;
        --torch-methods) need "$@"; TORCH_METHODS=$2; shift 2 ;;
        --no-torch) NO_TORCH=1; shift ;;
        --quick) QUICK=1; shift ;;
        --epochs-scale) need "$@"; EPOCHS_SCALE=$2; shift 2 ;;
        --steps) need "$@"; STEPS=$2; shift 2 ;;
        --max-train-rows) need "$@"; MAX_ROWS=$2; shift 2 ;;
        --batch-size) need "$@"; BATCH=$2; shift 2 ;;
        --precision) need "$@"; PRECISION=$2; shift 2 ;;
        --device) need "$@"; DEVICE=$2; shift 2 ;;
        --jobs) need "$@"; JOBS=$2; shift 2 ;;
        --time-budget) need "$@"; TIME_BUDGET=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --python) need "$@"; PY=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

# ------------------------------------------------------------------ checks
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }
for s in $SEEDS; do is_uint "$s" || die "--seeds: '$s' is not a non-negative integer"; done
for r in $RATIOS; do is_num "$r" || die "--ratios: '$r' is not a number"; done
for m in $METHODS; do
    case "$m" in movement|soft_movement|magnitude|svd|losparse|lpaf) ;; *) die "--methods: unknown method '$m'" ;; esac
done
for m in $TORCH_METHODS; do
    case "$m" in movement|losparse|magnitude) ;; *) die "--torch-methods: unknown method '$m' (movement, losparse, magnitude)" ;; esac
done
is_num "$EPOCHS_SCALE" || die "--epochs-scale: '$EPOCHS_SCALE' is not a number"
[ -z "$STEPS" ] || { is_uint "$STEPS" && [ "$STEPS" -ge 1 ]; } || die "--steps must be a positive integer"
[ -z "$MAX_ROWS" ] || { is_uint "$MAX_ROWS" && [ "$MAX_ROWS" -ge 1 ]; } || die "--max-train-rows must be a positive integer"
[ -z "$BATCH" ] || { is_uint "$BATCH" && [ "$BATCH" -ge 1 ]; } || die "--batch-size must be a positive integer"
is_uint "$JOBS" && [ "$JOBS" -ge 1 ] || die "--jobs must be a positive integer"
is_uint "$TIME_BUDGET" || die "--time-budget must be whole seconds"
case "$PRECISION" in ""|f32|tf32|bf16) ;; *) die "--precision: expected f32, tf32 or bf16" ;; esac
case "$DEVICE" in auto|cpu|cuda) ;; *) die "--device: expected auto, cpu or cuda" ;; esac

if [ "$QUICK" = 1 ]; then
    SEEDS=${SEEDS%% *}
    [ "$RATIOS_SET" = 1 ] || RATIOS="0.1"
    [ -n "$STEPS" ] || STEPS=30
fi
[ -n "$OUT" ] || { [ "$QUICK" = 1 ] && OUT=runs/polarity-quick || OUT=runs/polarity; }

if [ -z "$LPAF" ]; then
    if [ -x dist/lpaf ]; then LPAF=dist/lpaf; else LPAF=target/release/lpaf; fi
fi
[ -x "$LPAF" ] || die "engine binary '$LPAF' not found or not executable (cargo build --release, or scripts/bundle-for-gpu.sh)"
[ -f "$MODEL/config.json" ] || die "model directory '$MODEL' has no config.json (scripts/fetch-assets.sh, or --model)"
[ -f "$POLARITY" ] || die "polarity CSV '$POLARITY' not found (scripts/fetch-assets.sh, or --polarity)"
command -v "$PY" >/dev/null 2>&1 || die "python '$PY' not found (--python or PYTHON=...)"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null || die "$PY is older than Python 3.10"
if [ "$NO_TORCH" = 0 ] && [ -n "$TORCH_METHODS" ]; then
    "$PY" -c 'import torch, transformers, numpy' 2>/dev/null \
        || die "$PY cannot import torch, transformers and numpy (use --python, or --no-torch)"
fi
HELP="$PY $REPO/scripts/polarity_helpers.py"
case "$LPAF" in /*) ;; *) LPAF="$REPO/$LPAF" ;; esac
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

# ------------------------------------------------------------------ device
DEVICE_KIND=cpu
if [ "$DEVICE" = cuda ] || { [ "$DEVICE" = auto ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    DEVICE_KIND=cuda
fi
if [ "$DEVICE_KIND" = cuda ]; then
    # The engine dlopens libcuda, libcublas and libcublasLt: put the CUDA toolkit's or
    # python's nvidia wheels' lib folders on the library path (as scripts/run-on-gpu.sh).
    libdirs=()
    add_dir() {
        local d="$1" seen
        [ -d "$d" ] || return 0
        ls "$d"/libcublas.so* >/dev/null 2>&1 || return 0
        for seen in "${libdirs[@]:-}"; do [ "$seen" = "$d" ] && return 0; done
        libdirs+=("$d")
    }
    for d in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do add_dir "$d"; done
    while IFS= read -r d; do add_dir "$d"; done < <("$PY" - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
            print(lib)
except Exception:
    pass
PY
    )
    if [ "${#libdirs[@]}" -gt 0 ]; then
        joined=$(IFS=:; echo "${libdirs[*]}")
        export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        echo "warning: no libcublas.so* found; the engine may fall back to the CPU (see 'device:' in its logs)" >&2
    fi
    DEVICE_NAME=$(nvidia-smi -L 2>/dev/null | head -n 1 || echo "cuda (nvidia-smi failed)")
else
    DEVICE_NAME="cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown), $(nproc 2>/dev/null || echo '?') threads"
fi
ENGINE_DEVICE=$DEVICE
TORCH_DEVICE=$DEVICE
if [ "$DEVICE" = auto ]; then ENGINE_DEVICE=$DEVICE_KIND; TORCH_DEVICE=$DEVICE_KIND; fi

VERSIONS="$("$LPAF" --version 2>/dev/null || echo 'lpaf ?'); $("$PY" -c 'import sys; print("Python", sys.version.split()[0])')"
if [ "$NO_TORCH" = 0 ] && [ -n "$TORCH_METHODS" ]; then
    VERSIONS="$VERSIONS; $("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
fi
if [ "$DEVICE_KIND" = cuda ]; then
    drv=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)
    [ -z "$drv" ] || VERSIONS="$VERSIONS; driver $drv"
fi
COMMAND_LINE="scripts/reproduce-polarity-with-torch.sh$(printf ' %q' "${ORIG_ARGS[@]}")"

# ------------------------------------------------------------------ 1. split
$HELP split "$POLARITY" "$OUT/split"
TRAIN_CSV="$OUT/split/train.csv"
DEV_CSV="$OUT/split/dev.csv"
DATA_ARGS=(--train "$TRAIN_CSV" --dev "$DEV_CSV" --text-a sentence --label label)

# ------------------------------------------------------------------ steps per run
fmt_float() { awk -v x="$1" 'BEGIN { s = sprintf("%.6g", x); if (s !~ /[.e]/) s = s ".0"; print s }'; }
mul() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6g", a * b }'; }
recipe_get() { $HELP recipe-get "$@"; }

train_rows=$(($(wc -l < "$TRAIN_CSV") - 1))  # no sentence spans lines after stripping
[ -z "$MAX_ROWS" ] || [ "$MAX_ROWS" -ge "$train_rows" ] || train_rows=$MAX_ROWS
bs=${BATCH:-$(recipe_get recipes/finetune.toml train.batch_size 32)}
per_epoch=$(( (train_rows + bs - 1) / bs ))
steps_for_epochs() { awk -v e="$1" -v b="$per_epoch" 'BEGIN { s = e * b; c = int(s); if (c < s) c++; if (c < 1) c = 1; print c }'; }

# Per method: the engine / reference flags that set its length, and its total steps.
declare -A LEN_ARGS STEPS_OF
set_length() { # NAME RECIPE
    local name=$1 recipe=$2 e e3
    if [ -n "$STEPS" ]; then
        LEN_ARGS[$name]="--steps $STEPS"
        STEPS_OF[$name]=$STEPS
        if [ "$name" = lpaf ]; then
            LEN_ARGS[$name]="--steps $STEPS --set lpaf.finetune_steps=$STEPS"
            STEPS_OF[$name]=$((STEPS * 2))
        fi
    else
        e=$(mul "$(recipe_get "$recipe" train.epochs 3.0)" "$EPOCHS_SCALE")
        LEN_ARGS[$name]="--epochs $(fmt_float "$e")"
        STEPS_OF[$name]=$(steps_for_epochs "$e")
        if [ "$name" = lpaf ]; then
            e3=$(mul "$(recipe_get "$recipe" lpaf.finetune_epochs "$(recipe_get "$recipe" train.epochs 5.0)")" "$EPOCHS_SCALE")
            LEN_ARGS[$name]="${LEN_ARGS[$name]} --set lpaf.finetune_epochs=$(fmt_float "$e3")"
            STEPS_OF[$name]=$((STEPS_OF[$name] + $(steps_for_epochs "$e3")))
        fi
    fi
}
set_length finetune recipes/finetune.toml
for m in $METHODS $TORCH_METHODS; do set_length "$m" "recipes/$m.toml"; done

EXTRA=()
[ -z "$MAX_ROWS" ] || EXTRA+=(--max-train-rows "$MAX_ROWS")
[ -z "$BATCH" ] || EXTRA+=(--batch-size "$BATCH")
[ -z "$PRECISION" ] || EXTRA+=(--precision "$PRECISION")

# ------------------------------------------------------------------ the plan
# One line per run: NAME ENGINE METHOD RATIO SEED (in the order they start).
PLAN=()
for s in $SEEDS; do PLAN+=("finetune-s$s lpaf dense 1 $s"); done
for s in $SEEDS; do
    for r in $RATIOS; do
        for m in $METHODS; do PLAN+=("engine-$m-k$r-s$s lpaf $m $r $s"); done
        if [ "$NO_TORCH" = 0 ]; then
            for m in $TORCH_METHODS; do PLAN+=("pytorch-$m-k$r-s$s pytorch $m $r $s"); done
        fi
    done
done
plan_steps() { local m=$3; [ "$m" = dense ] && m=finetune; echo "${STEPS_OF[$m]}"; }

total_estimate() { # seconds for the planned runs not yet done (sequentially)
    local line name eng meth
    for line in "${PLAN[@]}"; do
        read -r name eng meth _ _ <<<"$line"
        if [ "$FORCE" = 0 ] && is_done "$name"; then continue; fi
        echo "$eng $meth $(plan_steps "$name" "$eng" "$meth")"
    done | $HELP eta "$OUT" --device-kind "$DEVICE_KIND" | awk '{ s += $1 } END { printf "%d", s }'
}
is_done() { # NAME: finished successfully with the command this call would run
    local n=$1
    [ -f "$OUT/$n/summary.json" ] && [ -f "$OUT/logs/$n.rc" ] && [ "$(cat "$OUT/logs/$n.rc")" = 0 ] \
        && [ -f "$OUT/logs/$n.cmd" ] && [ -f "$OUT/logs/$n.want" ] && cmp -s "$OUT/logs/$n.cmd" "$OUT/logs/$n.want"
}

command_for() { # NAME ENGINE METHOD RATIO SEED → the argv in CMD
    local name=$1 eng=$2 meth=$3 ratio=$4 seed=$5 len
    CMD=()
    if [ "$meth" = dense ]; then
        read -r -a len <<<"${LEN_ARGS[finetune]}"
        CMD=("$LPAF" finetune --config recipes/finetune.toml --model "$MODEL" --output "$OUT/$name"
            --task csv "${DATA_ARGS[@]}" --max-seq-len 64 --seed "$seed" --device "$ENGINE_DEVICE"
            "${len[@]}" "${EXTRA[@]}")
    elif [ "$eng" = lpaf ]; then
        local start=$MODEL
        # docs/algorithms.md §0: SVD factorizes the fine-tuned model.
        [ "$meth" != svd ] || start="$OUT/finetune-s$seed/best"
        read -r -a len <<<"${LEN_ARGS[$meth]}"
        CMD=("$LPAF" compress --recipe "recipes/$meth.toml" --kept-ratio "$ratio" --seed "$seed"
            --model "$start" --output "$OUT/$name" --task csv "${DATA_ARGS[@]}" --max-seq-len 64
            --device "$ENGINE_DEVICE" "${len[@]}" "${EXTRA[@]}")
    else
        read -r -a len <<<"${LEN_ARGS[$meth]}"
        CMD=("$PY" scripts/torch_reference.py --method "$meth" --recipe "recipes/$meth.toml"
            --kept-ratio "$ratio" --seed "$seed" --model "$MODEL" --output "$OUT/$name"
            "${DATA_ARGS[@]}" --max-seq-len 64 --device "$TORCH_DEVICE" -q "${len[@]}" "${EXTRA[@]}")
    fi
}

# ------------------------------------------------------------------ running
T0=$(date +%s)
N_PLAN=${#PLAN[@]}
n_started=0

run_one() { # NAME ENGINE METHOD RATIO SEED (argv in CMD); writes logs/NAME.{cmd,log,rc,wall}
    local name=$1 logs="$OUT/logs" t1 t2 rc
    rm -f "$logs/$name.notrun" "$logs/$name.rc" "$logs/$name.wall"
    echo "$JOBS" >"$logs/$name.jobs"  # >1: ran beside other runs (times contended)
    rm -rf "${OUT:?}/$name"
    cp "$logs/$name.want" "$logs/$name.cmd"
    t1=$(date +%s.%N)
    set +e
    "${CMD[@]}" >"$logs/$name.log" 2>&1 </dev/null
    rc=$?
    set -e
    t2=$(date +%s.%N)
    echo "$rc" >"$logs/$name.rc"
    awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f\n", b - a }' >"$logs/$name.wall"
    local what
    if [ "$rc" = 0 ] && [ -f "$OUT/$name/summary.json" ]; then
        what=$("$PY" - "$OUT/$name/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s.get("dev_metrics") or (s.get("final_eval") or {}).get("metrics") or []
acc = dict(m).get("accuracy") if isinstance(m, list) else m.get("accuracy")
kept = s.get("kept_ratio", 1.0)
print(f"ok: accuracy {acc:.4f}, kept {kept:.4f}, {s.get('steps')} steps, train {s.get('train_seconds', 0):.1f} s")
PY
        ) || what="ok (summary.json unreadable)"
    else
        what="FAILED (rc $rc): see $logs/$name.log"
        [ "$rc" != 0 ] || what="FAILED (no summary.json): see $logs/$name.log"
        tail -n 5 "$logs/$name.log" | sed 's/^/    | /' >&2 || true
    fi
    echo "[$(date +%H:%M:%S)] $name: $what ($(cat "$logs/$name.wall") s wall)"
}

echo "== reproduce-polarity: $N_PLAN runs into $OUT"
echo "   engine $LPAF on $ENGINE_DEVICE; model $MODEL; device $DEVICE_NAME"
echo "   $train_rows training rows, batch $bs ⇒ $per_epoch steps/epoch; steps per run:" \
    "finetune ${STEPS_OF[finetune]}$(for m in $METHODS $TORCH_METHODS; do printf ', %s %s' "$m" "${STEPS_OF[$m]}"; done)"
for line in "${PLAN[@]}"; do
    read -r name eng meth ratio seed <<<"$line"
    command_for $line
    printf '%q ' "${CMD[@]}" >"$OUT/logs/$name.want"
    echo >>"$OUT/logs/$name.want"
done
est=$(total_estimate)
echo "   estimated time for the runs still to do: $((est / 60)) min $((est % 60)) s" \
    "(per-step times of runs already timed in $OUT, else guesses)$( [ "$TIME_BUDGET" -gt 0 ] && echo "; time budget $TIME_BUDGET s")" \
    "$( [ "$JOBS" -gt 1 ] && echo "; $JOBS at once: roughly 1/$JOBS of that if the GPU is not saturated")"

if [ "$DRY_RUN" = 1 ]; then
    for line in "${PLAN[@]}"; do
        read -r name _ <<<"$line"
        if [ "$FORCE" = 0 ] && is_done "$name"; then echo "  (done) $name"; else echo "  $name: $(cat "$OUT/logs/$name.want")"; fi
    done
    exit 0
fi

wait_for_slot() {
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n 2>/dev/null || true; done
}

launch_plan() { # FILTER: "finetune" or "rest"
    local phase=$1 line name eng meth ratio seed eta now
    for line in "${PLAN[@]}"; do
        read -r name eng meth ratio seed <<<"$line"
        if [ "$phase" = finetune ] && [ "$meth" != dense ]; then continue; fi
        if [ "$phase" = rest ] && [ "$meth" = dense ]; then continue; fi
        n_started=$((n_started + 1))
        if [ "$FORCE" = 0 ] && is_done "$name"; then
            echo "[$(date +%H:%M:%S)] $name: already done, kept"
            continue
        fi
        [ "$JOBS" -eq 1 ] || wait_for_slot
        if [ "$TIME_BUDGET" -gt 0 ]; then
            eta=$(echo "$eng $meth $(plan_steps "$name" "$eng" "$meth")" | $HELP eta "$OUT" --device-kind "$DEVICE_KIND")
            now=$(( $(date +%s) - T0 ))
            if [ $((now + eta)) -gt "$TIME_BUDGET" ]; then
                echo "[$(date +%H:%M:%S)] $name: not started (≈${eta} s would pass the ${TIME_BUDGET} s budget at ${now} s)"
                if ! [ -f "$OUT/logs/$name.rc" ] || [ "$(cat "$OUT/logs/$name.rc")" != 0 ]; then
                    rm -f "$OUT/logs/$name.cmd" "$OUT/logs/$name.rc" "$OUT/logs/$name.wall"
                    echo "time budget" >"$OUT/logs/$name.notrun"
                fi
                continue
            fi
        fi
        command_for $line
        echo "[$(date +%H:%M:%S)] $name: starting ($n_started/$N_PLAN)"
        if [ "$JOBS" -gt 1 ]; then
            run_one "$name" &
        else
            run_one "$name"
            est=$(total_estimate)
            echo "    elapsed $(( $(date +%s) - T0 )) s; estimated remaining $((est / 60)) min $((est % 60)) s"
        fi
    done
    wait
}

# 2. dense fine-tuning (every seed: the dense row, the SVD start and the teacher)
launch_plan finetune
# 3.–4. every method of the engine, then the PyTorch reference, seed by seed
launch_plan rest

# ------------------------------------------------------------------ 5. table
echo "== table (elapsed $(( $(date +%s) - T0 )) s)"
$HELP table "$OUT" --command "$COMMAND_LINE" --device "$DEVICE_NAME" --versions "$VERSIONS"
