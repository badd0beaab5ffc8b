#!/bin/bash
# backup-bench.sh - full + incremental backup, qemu-storage-daemon vs vbackupd.
#
# The workload of /work/shared/bench/qsd-backup-bench.sh (a SIZE qcow2 of
# random data, full backup with bitmap bm0 added, SCATTER_N x SCATTER_KIB KiB
# scattered writes, incremental backup of bm0), run on qemu-storage-daemon
# and on vbackupd in the same session, runs interleaved (qsd, vbk, vbk,
# qsd, qsd, vbk, ...) to spread machine drift over both, for each DIRECT mode
# (cache.direct of source and targets).  Timing points are the peer
# script's: from the QMP command to BLOCK_JOB_COMPLETED ("job"), and to
# blockdev-del of the target returning ("close", includes the flush).
# The scattered writes go through an NBD export on qsd and through QMP
# human-monitor-command qemu-io on vbackupd (it has no NBD server yet);
# they are not timed as part of a backup.
#
# Sequential copy baseline of the same bytes, per DIRECT mode:
#   convert: `qemu-img convert -O qcow2 -T C -t C pristine.qcow2 seq.qcow2`
#            (C = none for DIRECT=on, writeback for off; qemu-img flushes
#            on close), i.e. the same qcow2 -> qcow2 copy a full backup does;
#   dd:      `dd bs=1M` of the source qcow2 file (iflag/oflag=direct for
#            DIRECT=on, conv=fsync for off): the raw file copy ceiling.
#
# Prints, per DIRECT mode, a table of medians: seconds (job end / close) and
# MB/s (10^6 bytes over close time) for full and incremental on each side,
# ratio vbk/qsd of the close times (< 1 means vbackupd is faster), and
# the full backup's speed as a fraction of each copy baseline's.
#
# Env: SIZE=2G RUNS=4 DIR=$TMPDIR/vbk-backup-bench SCATTER_N=1024
#      SCATTER_KIB=64 MODES="on off" VERIFY=1 KEEP=0
#      VBACKUPD=<path> (default: build*/plugin/vbackupd next to this tree)
# Needs qemu-storage-daemon, qemu-img, qemu-io, openssl, /usr/bin/python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SIZE=${SIZE:-2G}; RUNS=${RUNS:-4}; DIR=${DIR:-${TMPDIR:-/tmp}/vbk-backup-bench}
SCATTER_N=${SCATTER_N:-1024}; SCATTER_KIB=${SCATTER_KIB:-64}
MODES=${MODES:-on off}; VERIFY=${VERIFY:-1}; KEEP=${KEEP:-0}
PY=/usr/bin/python3
if [ -z "${VBACKUPD:-}" ]; then
  VBACKUPD=$(ls -t "$HERE"/../../build*/plugin/vbackupd 2>/dev/null | head -1)
fi
[ -x "$VBACKUPD" ] || { echo "no vbackupd (set VBACKUPD=)" >&2; exit 1; }
VBACKUPD=$(readlink -f "$VBACKUPD")
mkdir -p "$DIR"; cd "$DIR"
bytes=$(numfmt --from=iec "$SIZE")
RESULTS=$DIR/results.jsonl; : >"$RESULTS"

echo "# backup-bench: SIZE=$SIZE RUNS=$RUNS SCATTER=${SCATTER_N}x${SCATTER_KIB}KiB MODES='$MODES'"
echo "# vbackupd: $VBACKUPD"
echo "# $(qemu-storage-daemon --version | head -1); $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# NOTE: the machine may be shared with other jobs; runs are interleaved."

vsize() { qemu-img info --output=json "$1" | $PY -c 'import json,sys;print(json.load(sys.stdin)["virtual-size"])'; }
if [ ! -f pristine.qcow2 ] || [ "$(vsize pristine.qcow2)" != "$bytes" ]; then
  { openssl enc -aes-128-ctr -pass pass:qsdbench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } \
    | head -c "$bytes" >rand.raw
  qemu-img convert -O qcow2 rand.raw pristine.qcow2
  rm -f rand.raw
fi

now() { date +%s.%N; }
record() { echo "$1" >>"$RESULTS"; }

seq_baseline() {  # $1 = DIRECT mode, $2 = run
  local c t0 t1
  if [ "$1" = on ]; then c=none; else c=writeback; fi
  rm -f seq.qcow2 seq.copy; sync
  t0=$(now); qemu-img convert -O qcow2 -T $c -t $c pristine.qcow2 seq.qcow2; t1=$(now)
  record "{\"side\":\"convert\",\"direct\":\"$1\",\"run\":$2,\"secs\":$(awk "BEGIN{printf \"%.6f\", $t1 - $t0}"),\"bytes\":$bytes}"
  rm -f seq.qcow2; sync
  t0=$(now)
  if [ "$1" = on ]; then
    dd if=pristine.qcow2 of=seq.copy bs=1M iflag=direct oflag=direct status=none
  else
    dd if=pristine.qcow2 of=seq.copy bs=1M conv=fsync status=none
  fi
  t1=$(now)
  record "{\"side\":\"dd\",\"direct\":\"$1\",\"run\":$2,\"secs\":$(awk "BEGIN{printf \"%.6f\", $t1 - $t0}"),\"bytes\":$(stat -c %s pristine.qcow2)}"
  rm -f seq.copy
}

one_run() {  # $1 = side, $2 = DIRECT mode, $3 = run
  rm -f src.qcow2 full.qcow2 inc.qcow2 qmp.sock nbd.sock
  cp pristine.qcow2 src.qcow2
  qemu-img create -q -f qcow2 full.qcow2 "$bytes"
  qemu-img create -q -f qcow2 inc.qcow2 "$bytes"
  sync
  # each side starts from the same page cache: nothing dirty, nothing
  # cached (as root; elsewhere the alternating order has to do)
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
  local line
  line=$(timeout 1200 $PY "$HERE/backup-bench-run.py" "$1" "$DIR" "$3" "$2" \
         "$bytes" "$SCATTER_N" "$SCATTER_KIB" "$VBACKUPD")
  record "$line"
  echo "$line" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("%s direct=%s run %d: FULL job %.3fs close %.3fs %.0f MiB | dirty %.2fs count %.1f MiB | INCR job %.3fs close %.3fs %.1f MiB" % (r["side"], r["direct"], r["run"], r["full_job"], r["full_close"], r["full_bytes"]/2**20, r["dirty_s"], r["dirty_count"]/2**20, r["inc_job"], r["inc_close"], r["inc_bytes"]/2**20))'
  if [ "$VERIFY" = 1 ]; then
    qemu-img rebase -u -f qcow2 -b full.qcow2 -F qcow2 inc.qcow2
    if qemu-img compare -q src.qcow2 inc.qcow2; then
      echo "  verify: full<-inc chain equals the source"
    else
      echo "  verify: full<-inc chain DIFFERS from the source" >&2; exit 1
    fi
  fi
}

# The side that goes second follows the other side's verify (qemu-img
# compare of 2 GiB images, then deleting them), the first one follows the
# sequential baselines; so that neither side always runs in the same
# spot, the order alternates: qsd first in odd runs, vbk first in even
# runs (an even RUNS gives a balanced set).
for mode in $MODES; do
  for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then
      one_run qsd "$mode" "$run"; one_run vbk "$mode" "$run"
    else
      one_run vbk "$mode" "$run"; one_run qsd "$mode" "$run"
    fi
    seq_baseline "$mode" "$run"
  done
done
[ "$KEEP" = 1 ] || rm -f src.qcow2 full.qcow2 inc.qcow2 qmp.sock nbd.sock

$PY - "$RESULTS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(side, mode, key):
    v = [r[key] for r in rows if r["side"] == side and r["direct"] == mode]
    return statistics.median(v) if v else float("nan")
for mode in sorted({r["direct"] for r in rows}, reverse=True):
    n = len([r for r in rows if r["side"] == "vbk" and r["direct"] == mode])
    print(f"\nDIRECT={mode}: medians of {n} runs  (MB = 10^6 bytes; MB/s over close time)")
    print(f"{'':18}{'qsd job':>9}{'qsd close':>10}{'qsd MB/s':>9}{'vbk job':>9}{'vbk close':>10}{'vbk MB/s':>9}{'vbk/qsd':>8}")
    for kind in ("full", "inc"):
        b = med("vbk", mode, kind + "_bytes")
        q = (med("qsd", mode, kind + "_job"), med("qsd", mode, kind + "_close"))
        v = (med("vbk", mode, kind + "_job"), med("vbk", mode, kind + "_close"))
        print(f"{kind + ' (%.0f MiB)' % (b / 2**20):18}{q[0]:9.3f}{q[1]:10.3f}{b / q[1] / 1e6:9.1f}"
              f"{v[0]:9.3f}{v[1]:10.3f}{b / v[1] / 1e6:9.1f}{v[1] / q[1]:8.2f}")
    fb = med("vbk", mode, "full_bytes")
    for base in ("convert", "dd"):
        s = med(base, mode, "secs"); sb = med(base, mode, "bytes")
        rate = sb / s
        print(f"seq {base:8} {s:7.3f}s {rate / 1e6:7.1f} MB/s -> full backup at "
              f"{fb / med('vbk', mode, 'full_close') / rate:.2f} (vbk), "
              f"{fb / med('qsd', mode, 'full_close') / rate:.2f} (qsd) of it")
PYEOF
