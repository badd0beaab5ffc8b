#!/usr/bin/python3
"""Count test cases across meson test logs (TAP subtests included) and
print one closing line: "N passed, N failed"."""
import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        t = json.loads(line)
        subs = t.get("stdout", "") or ""
        tap = [l for l in subs.splitlines()
               if l.startswith("ok ") or l.startswith("not ok ")]
        if tap:
            for l in tap:
                if l.startswith("not ok") and "# TODO" in l:
                    skipped += 1  # a known gap, reported as such
                elif l.startswith("not ok"):
                    failed += 1
                elif "# SKIP" in l:
                    skipped += 1
                else:
                    passed += 1
            if t["result"] not in ("OK", "EXPECTEDFAIL") and \
                    not any(l.startswith("not ok") and "# TODO" not in l
                            for l in tap):
                failed += 1  # crashed or timed out outside a test case
        elif t["result"] in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif t["result"] == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed" +
      (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed or passed == 0 else 0)
