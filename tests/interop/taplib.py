"""taplib.py: TAP output for the Python interop tests.

    t = Tap()
    t.ok(cond, 'what was checked', diag)   # diag printed as '# ' lines
    t.eq(ours, theirs, 'what was compared') # diag: both values
    ...
    print('1..%d' % t.n); sys.exit(1 if t.failed else 0)
"""

import sys


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, desc, diag=None):
        self.n += 1
        print('%s %d - %s' % ('ok' if cond else 'not ok', self.n, desc))
        if not cond:
            self.failed += 1
            for line in str(diag or '').splitlines():
                print('# ' + line)
        sys.stdout.flush()
        return cond

    def eq(self, got, want, desc):
        return self.ok(got == want, desc, 'ours:   %r\nqemu:   %r' % (got, want))
