#!/usr/bin/env bash
# The engine rows of the polarity table as a sweep (README "Sweeps and clusters"); arguments go to lpaf sweep (--gpus 0,1 / --jobs N / --emit slurm / --dry-run).
# LPAF_SWEEP: the sweep file (default sweeps/polarity.toml, the full recipes for GPUs; sweeps/polarity-cpu.toml is the reduced CPU budget of the README's table).
# LPAF: the binary (default target/release/lpaf); LPAF_CACHE: where scripts/fetch-assets.sh put polarity.csv.
set -euo pipefail; cd "$(dirname "$0")/.."; python3 scripts/polarity_helpers.py split "${LPAF_CACHE:-$HOME/.cache/lpaf}/polarity/polarity.csv" runs/polarity/split && exec "${LPAF:-target/release/lpaf}" sweep "${LPAF_SWEEP:-sweeps/polarity.toml}" "$@"
