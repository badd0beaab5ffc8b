#!/usr/bin/python3
"""Run an iotest port and compare its log with QEMU's golden output.

Usage: iotests257-run.py NORMALIZER GOLDEN PORT [PORT-ARGS...]

Both the port's stdout and GOLDEN go through NORMALIZER (the shared
normalize-bitmap-dumps.py, which keeps only named bitmaps in the bitmap
dumps); the two results must be equal byte for byte.  On a difference
the unified diff is printed and the exit status is 1.
"""

import difflib
import subprocess
import sys


def normalize(normalizer, text):
    return subprocess.run(['/usr/bin/python3', normalizer], input=text,
                          capture_output=True, text=True,
                          check=True).stdout


def main():
    normalizer, golden, port = sys.argv[1:4]
    try:
        run = subprocess.run(['/usr/bin/python3', port] + sys.argv[4:],
                             capture_output=True, text=True, timeout=540)
    except subprocess.TimeoutExpired as e:
        sys.stderr.write(e.stderr or '')
        print('%s did not finish within %ds' % (port, e.timeout))
        return 1
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        print('%s exited with %d' % (port, run.returncode))
        return 1
    with open(golden, encoding='utf-8') as f:
        want = normalize(normalizer, f.read())
    have = normalize(normalizer, run.stdout)
    if want == have:
        print('%s: %d lines, equal to %s after normalisation'
              % (port, want.count('\n') + 1, golden))
        return 0
    diff = list(difflib.unified_diff(want.splitlines(True),
                                     have.splitlines(True),
                                     golden, 'port output'))
    sys.stdout.writelines(diff)
    changed = sum(1 for line in diff
                  if line[:1] in '+-' and line[:3] not in ('+++', '---'))
    print('\n%d differing lines' % changed)
    return 1


if __name__ == '__main__':
    sys.exit(main())
