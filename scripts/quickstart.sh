#!/usr/bin/env bash
# The main job, on a fresh machine: installs the pinned nvcc (so the binary
# carries its CUDA kernels), builds lpaf, fetches all-MiniLM-L6-v2 and the
# Pang & Lee polarity data, fine-tunes MiniLM on it and prints the dev
# accuracy. With an NVIDIA GPU the full recipe runs (3 epochs); on a machine
# without one, a shorter run (300 steps of 16) — slower, still a real result.
#
# Usage: scripts/quickstart.sh [extra lpaf finetune flags, e.g. --steps 100]
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "quickstart: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
bash scripts/install-nvcc.sh
cargo build --release
bash scripts/fetch-assets.sh

args=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "quickstart: GPU found: $(nvidia-smi -L | head -n 1)"
else
    echo "quickstart: no GPU: a shorter CPU run (200 steps of 16 sentences, ~10 minutes on 2 cores)"
    args=(--steps 200 --batch-size 16 --eval-every 100)
fi
./target/release/lpaf finetune --config recipes/finetune.toml --output runs/quickstart "${args[@]}" "$@"
echo "quickstart: dev accuracy above; model in runs/quickstart/best, log in runs/quickstart/log.jsonl"
