#!/usr/bin/env bash
# Regenerate the seed corpus of fuzz-qcow2 with the real qemu-img/qemu-io:
# small images (512 B - 16 KiB clusters, 1 MiB or less of virtual size),
# each exercising one part of the qcow2 open-and-read path: v2 and v3
# headers, refcount widths, zero and compressed clusters (deflate, zstd),
# lazy refcounts left dirty, a backing file reference, a persistent
# bitmap extension.  Every file stays below run-fuzz-smoke.sh's -max_len
# of 64 KiB (so extended L2, whose clusters are >= 16 KiB, is left out:
# its smallest image is 96 KiB).
#
#   tests/fuzz/make-qcow2-corpus.sh [OUTDIR]   (default: corpus/fuzz-qcow2)
#
# The seeds have no .qcow2 suffix, which .gitignore ignores.  Files named
# regress-* are inputs the fuzzer once crashed on, kept as seeds; this
# script leaves them alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/fuzz-qcow2}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mk() { # name size opts
  qemu-img create -q -f qcow2 -o "$3" "$out/$1" "$2"
}
io() { # image cmd...
  local img=$1; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}

mk empty-v3 1M cluster_size=512
mk data-v3 1M cluster_size=512
io "$out/data-v3" 'write -P 0x11 0 8k' 'write -P 0x22 700001 3000'
mk data-v2 1M cluster_size=512,compat=0.10
io "$out/data-v2" 'write -P 0x33 512 4k' 'write -z 8k 4k'
mk zero-v3 1M cluster_size=1024
io "$out/zero-v3" 'write -P 0x44 0 16k' 'write -z 4k 4k' \
  'write -z -u 12k 2k' 'discard 64k 1k'
mk refcount1 512k cluster_size=512,refcount_bits=1
io "$out/refcount1" 'write -P 0x55 1k 3k'
mk refcount64 512k cluster_size=512,refcount_bits=64
io "$out/refcount64" 'write -P 0x66 1k 3k'
mk lazy-dirty 512k cluster_size=512,lazy_refcounts=on
# killed before close: the dirty bit stays set
(qemu-io -f qcow2 -c 'write -P 0x77 0 4k' -c 'sigraise 9' \
  "$out/lazy-dirty" >/dev/null 2>&1) 2>/dev/null || true
# -u: the named backing file need not exist (the target opens no backing)
qemu-img create -q -f qcow2 -u -o cluster_size=512 -b base.qcow2 -F qcow2 \
  "$out/backing-ref" 1M
mk bitmap 1M cluster_size=512
io "$out/bitmap" 'write -P 0xaa 0 2k'
qemu-img bitmap --add "$out/bitmap" b0
qemu-img bitmap --add -g 4096 "$out/bitmap" b1

# compressed clusters: convert a raw file with runs and text
/usr/bin/python3 - "$tmp/src.raw" <<'PY'
import sys
data = bytearray(256 * 1024)
for i in range(64 * 1024):
    data[i] = (i // 512) & 0xff
text = b"vbackup qcow2 fuzz corpus "
for i in range(128 * 1024, 192 * 1024):
    data[i] = text[i % len(text)]
open(sys.argv[1], "wb").write(data)
PY
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 \
  "$tmp/src.raw" "$out/compressed-zlib"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd \
  "$tmp/src.raw" "$out/compressed-zstd"

ls -l "$out"
