#!/usr/bin/env bash
# bitmap-bench.sh: the cost of recording dirty bitmaps on the write path,
# vbackup beside QEMU (qemu-storage-daemon over NBD) in the same run.
# Random 4 KiB writes into a 1 GiB qcow2 with 0, 16 and 256 recording
# bitmaps, cache.direct on and off; prints throughput and the slowdown
# against 0 bitmaps for both sides.  Not a pass/fail test.
#
#   tests/bench/bitmap-bench.sh [BUILD_DIR]        (default: build)
#
# Settings (COUNT, RUNS, BITMAPS, CACHES, QDEPTH, VDEPTH, BENCH_DIR) and
# the method are described in bitmap-bench.py, which does the work.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/bitmap-bench.py" "${1:-build}"
