#!/usr/bin/python3
"""check-iotest.py: run one iotest port and compare its log with QEMU's.

Usage: check-iotest.py PORT GOLDEN [NORMALIZER]

Runs PORT (an executable printing an iotest log), passes its output and
the golden log GOLDEN through NORMALIZER (default: GOLDEN's folder's
normalize-bitmap-dumps.py), and compares the two byte for byte.  Exit 0
when equal and the port succeeded; otherwise prints the unified diff
(golden -> got) and the port's stderr, and exits 1.
"""

import difflib
import os
import subprocess
import sys


def normalize(normalizer, text):
    res = subprocess.run(['/usr/bin/python3', normalizer], input=text,
                         stdout=subprocess.PIPE, text=True, check=True)
    return res.stdout


def main():
    if len(sys.argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    port, golden = sys.argv[1], sys.argv[2]
    normalizer = sys.argv[3] if len(sys.argv) == 4 else os.path.join(
        os.path.dirname(golden), 'normalize-bitmap-dumps.py')
    run = subprocess.run([port], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=600)
    with open(golden, encoding='utf-8') as f:
        want = normalize(normalizer, f.read())
    got = normalize(normalizer, run.stdout)
    if got == want and run.returncode == 0:
        print('%s: log equals %s' % (os.path.basename(port), golden))
        return 0
    diff = difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                'golden/' + os.path.basename(golden),
                                'got/' + os.path.basename(golden))
    sys.stdout.writelines(diff)
    print('\n%s exited with %d' % (os.path.basename(port), run.returncode))
    if run.stderr:
        print('--- stderr ---')
        print(run.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
