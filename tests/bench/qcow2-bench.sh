#!/usr/bin/env bash
# qcow2-bench.sh: vbackup's qcow2 against qemu-img bench, same run, same
# machine, same image type and cache mode.  Not a pass/fail test.
#
#   tests/bench/qcow2-bench.sh [BUILD_DIR]      (default: build)
#   env: COUNT (requests per run, default 8192 = 512 MiB of 64 KiB),
#        RUNS (runs per side, default 3; the median is reported),
#        DEPTH (qemu-img bench -d / vbk-bench threads, default 1),
#        BENCH_DIR (where the 2 GiB images go, default a temp dir in /var/tmp)
#
# Each side sends COUNT 64 KiB requests to a 2 GiB qcow2 (v3, 64 KiB
# clusters, refcount 16: qemu-img's defaults), both sides on images made
# by qemu-img the same way:
#   write  a fresh image per run, preallocation=off (so each write also
#          allocates its cluster: the path a backup target takes);
#   read   one image made once with preallocation=full, shared by both.
# Patterns:
#   seq    offsets 0, 64k, 128k, ...
#   rand   qemu-img bench has no random mode, so both sides take the same
#          stride: request i goes to (i * STEP) mod 2 GiB with STEP =
#          12345 * 64 KiB.  12345 is odd, hence coprime with the 32768
#          slots of the image, so the offsets are a permutation of distinct
#          clusters scattered over the whole image (no request repeats a
#          cluster until all 32768 were visited).
# Cache modes: none (O_DIRECT; qemu-img -t none, vbk-bench cache.direct)
# and writeback (page cache).  Runs alternate qemu, vbackup, qemu, ... so
# that drift on the shared machine hits both sides alike.
set -euo pipefail
build=${1:-build}
vbk=$build/tests/bench/vbk-bench
[ -x "$vbk" ] || { echo "qcow2-bench: $vbk not built" >&2; exit 1; }
count=${COUNT:-8192}
runs=${RUNS:-3}
depth=${DEPTH:-1}
dir=${BENCH_DIR:-$(mktemp -d /var/tmp/vbk-bench.XXXXXX)}
trap 'rm -rf "$dir"' EXIT
size=2G
req=65536
step=$((12345 * req))

secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v s="$1" -v n="$count" -v r="$req" \
  'BEGIN {printf "%.1f", n * r / s / 1048576}'; }

one_run() { # side op cache pattern
  local side=$1 op=$2 cache=$3 pat=$4 img args=()
  if [ "$op" = write ]; then
    img=$dir/w.qcow2
    rm -f "$img"
    qemu-img create -q -f qcow2 "$img" $size
    args+=(-w --pattern=165)
  else
    img=$dir/r.qcow2
  fi
  [ "$pat" = rand ] && args+=(-S $step)
  if [ "$side" = qemu ]; then
    qemu-img bench -f qcow2 -t "$cache" -d "$depth" -c "$count" -s 64k \
      "${args[@]}" "$img" | secs
  else
    "$vbk" -f qcow2 -t "$cache" -d "$depth" -c "$count" -s 64k \
      "${args[@]}" "$img" | secs
  fi
}

echo "qcow2-bench: $count x 64 KiB requests, depth $depth, $runs runs each," \
  "2 GiB qcow2 in $dir"
qemu-img create -q -f qcow2 -o preallocation=full "$dir/r.qcow2" $size

printf '%-6s %-10s %-5s %12s %12s %8s\n' op cache order \
  "qemu MiB/s" "vbk MiB/s" "vbk/qemu"
for cache in none writeback; do
  for op in write read; do
    for pat in seq rand; do
      q=(); v=()
      for ((i = 0; i < runs; i++)); do
        q+=("$(one_run qemu $op $cache $pat)")
        v+=("$(one_run vbk $op $cache $pat)")
      done
      qs=$(printf '%s\n' "${q[@]}" | median)
      vs=$(printf '%s\n' "${v[@]}" | median)
      qm=$(mbps "$qs"); vm=$(mbps "$vs")
      printf '%-6s %-10s %-5s %12s %12s %8s\n' $op $cache $pat "$qm" "$vm" \
        "$(awk -v a="$vm" -v b="$qm" 'BEGIN {printf "%.2f", a / b}')"
      echo "  runs (s): qemu ${q[*]} | vbk ${v[*]}" >&2
    done
  done
done
