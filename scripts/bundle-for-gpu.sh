#!/usr/bin/env bash
# Builds, on this machine, what a GPU machine needs to run the tests and the
# kernel benchmarks without a Rust toolchain, and puts it in dist/ (ignored
# by git):
#   dist/lpaf        the release binary (stripped by the release profile)
#   dist/lpaf-tests  the integration-test executable (tests/it), release
# Then on the GPU machine, from the repository root: scripts/run-on-gpu.sh
#
# nvcc is required (LPAF_REQUIRE_NVCC=1): a bundle without kernels could not
# run anything on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export LPAF_REQUIRE_NVCC=1

echo "== building the release binary"
cargo build --release --bin lpaf

echo "== building the integration tests (release)"
# The executable's path is only known from cargo's JSON messages: take the
# compiler-artifact of target "it" that has an executable.
json=$(cargo test --release --no-run --test it --message-format=json)
tests_exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact":
        continue
    target = msg.get("target", {})
    if target.get("name") == "it" and "test" in target.get("kind", []) and msg.get("executable"):
        print(msg["executable"])
')
if [ -z "$tests_exe" ] || [ ! -x "$tests_exe" ]; then
    echo "error: could not find the integration-test executable in cargo's output" >&2
    exit 1
fi

mkdir -p dist
rm -f dist/lpaf dist/lpaf-tests
cp target/release/lpaf dist/lpaf
cp "$tests_exe" dist/lpaf-tests
chmod +x dist/lpaf dist/lpaf-tests

bin_size=$(stat -c %s dist/lpaf)
test_size=$(stat -c %s dist/lpaf-tests)
total=$((bin_size + test_size))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "== bundle"
echo "dist/lpaf        $(mib "$bin_size")"
echo "dist/lpaf-tests  $(mib "$test_size")  (from $tests_exe)"
echo "total            $(mib "$total")"
limit=$((64 * 1024 * 1024))
if [ "$total" -ge "$limit" ]; then
    echo "error: the bundle is over 64 MiB, more than a GPU run can carry" >&2
    exit 1
elif [ "$total" -ge $((limit * 3 / 4)) ]; then
    echo "warning: the bundle is over 48 MiB, close to the 64 MiB a GPU run can carry" >&2
fi
