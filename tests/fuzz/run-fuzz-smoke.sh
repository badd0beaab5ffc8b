#!/bin/sh
# run-fuzz-smoke.sh TARGET...: run each libFuzzer target for a short
# while over a scratch copy of its seed corpus (corpus/<name>/ beside
# this script, or $VBK_FUZZ_CORPUS_DIR/<name>/). Fails on any crash,
# leak, timeout or sanitizer report.
#   VBK_FUZZ_SECONDS   time per target (default 20)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
corpus_root=${VBK_FUZZ_CORPUS_DIR:-$here/corpus}
seconds=${VBK_FUZZ_SECONDS:-20}

[ $# -ge 1 ] || { echo "usage: $0 TARGET..." >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
for target in "$@"; do
    name=$(basename "$target")
    work=$(mktemp -d)
    if [ -d "$corpus_root/$name" ]; then
        cp "$corpus_root/$name"/* "$work"/ 2>/dev/null || true
    fi
    echo "== $name: ${seconds}s over $(ls "$work" | wc -l) seeds"
    if "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix="$work/" -print_final_stats=1 \
        "$work" >"$work.log" 2>&1; then
        tail -n 3 "$work.log"
    else
        echo "FAIL: $name" >&2
        tail -n 60 "$work.log" >&2
        # keep the reproducers where the caller can find them
        mkdir -p fuzz-artifacts
        cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* fuzz-artifacts/ \
            2>/dev/null || true
        ls fuzz-artifacts >&2
        status=1
    fi
    rm -rf "$work" "$work.log"
done
exit $status
