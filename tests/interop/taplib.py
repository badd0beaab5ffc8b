"""taplib.py: TAP output for vbackup's script tests (meson protocol 'tap').

Each check prints "ok N - desc" or "not ok N - desc" followed by '#'
lines explaining a failure; done() prints the plan and returns the exit
status.  eq() labels the two sides ('got'/'want' by default; the side by
side tests say which is vbackupd and which is QEMU).
"""
import sys


class Tap:
    def __init__(self, ours='got', theirs='want'):
        self.n = 0
        self.failed = 0
        width = max(len(ours), len(theirs)) + 1
        self.labels = ((ours + ':').ljust(width), (theirs + ':').ljust(width))

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
        return self.ok(got == want, desc, '%s %r\n%s %r' % (
            self.labels[0], got, self.labels[1], want))

    def done(self):
        print('1..%d' % self.n)
        sys.stdout.flush()
        return 1 if self.failed else 0
