#!/usr/bin/python3
"""check-hmp-qemu.py: HMP human-monitor-command, vbackupd beside QEMU 7.2.

qemu-storage-daemon has no HMP, so the peer here is qemu-system-x86_64
with no machine (-machine none): both get the same nodes (a writable and
a read-only qcow2) and the same HMP command lines, and

- replies QEMU puts in the HMP answer must be equal byte for byte
  ("" for a successful qemu-io, "Block node is read-only\r\n",
  "Error: Cannot find device=...", HMP's own errors);
- where qemu-io fails inside QEMU (bad syntax, I/O error, pattern
  mismatch) QEMU answers "" and prints qemu-io's text on its stdout;
  vbackupd answers with that text instead (HACKING.md: a QMP client can
  see it), so its answers must hold what QEMU printed on stdout/stderr;
- what both print on stdout for successful commands is the same report
  (timing figures masked).

Usage: check-hmp-qemu.py VBACKUPD   (TAP on stdout)
"""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402

QEMU = '/usr/bin/qemu-system-x86_64'

# (command line, where QEMU reports it: 'reply' or 'stdout')
CASES = [
    ('qemu-io rw "write -P 0x11 0 64k"', 'reply'),
    ('qemu-io rw "read -P 0x11 0 64k"', 'reply'),
    ('qemu-io rw "write -z 64k 64k"', 'reply'),
    ('qemu-io rw "discard 128k 64k"', 'reply'),
    ('qemu-io rw "flush"', 'reply'),
    ('qemu-io ro "write 0 512"', 'reply'),
    ('qemu-io ro "write -z 0 512"', 'reply'),
    ('qemu-io ro "discard 0 512"', 'reply'),
    ('qemu-io ro "write -X 0 512"', 'reply'),
    ('qemu-io ro "read -P 0 0 512"', 'reply'),
    ('qemu-io ro "flush"', 'reply'),
    ('qemu-io -d rw "flush"', 'reply'),
    ('qemu-io nosuch "read 0 512"', 'reply'),
    ('qemu-io rw', 'reply'),
    ('frobnicate', 'reply'),
    ('', 'reply'),
    ('qemu-io', 'reply'),
    ('qemu-io -d', 'reply'),
    ('qemu-io -d rw', 'reply'),
    ('qemu-io "rw', 'reply'),
    ('qemu-io rw "flush" extra', 'reply'),
    ('qemu-io rw "flush"x', 'reply'),
    ('qemu-io rw flush', 'reply'),
    ('block_resize', 'reply'),
    ('block_resize x', 'reply'),
    ('block_resize x -1', 'reply'),
    ('block_resize x 1Q', 'reply'),
    ('block_resize x 1M extra', 'reply'),
    ('block_resize x 1.5M', 'reply'),
    ('block_resize x 1k', 'reply'),
    ('qemu-io rw "read -P 0x22 0 512"', 'stdout'),
    ('qemu-io rw "write 2M 512"', 'stdout'),
    ('qemu-io rw "bogus 0 512"', 'stdout'),
    ('qemu-io rw "write 0"', 'stdout'),
    ('qemu-io rw "write -X 0 512"', 'stdout'),
    ('qemu-io rw "read 1x 512"', 'stdout'),
    ('qemu-io rw "write -P 300 0 4"', 'stdout'),
]

STATS = re.compile(r'^(.*, \d+ ops; )\S+ sec \(.*\)$')


def mask(text):
    """qemu-io's statistics line carries timings: keep its shape only."""
    return '\n'.join(STATS.sub(r'\1T sec (T)', line)
                     for line in text.replace('\r\n', '\n').split('\n'))


def session(argv, sock, d, stderr):
    """Start a peer, give it the two nodes, run CASES; return the replies
    and everything it printed on stdout (and stderr, if @stderr)."""
    out_path = os.path.join(d, os.path.basename(sock) + '.out')
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out if stderr
                                else subprocess.DEVNULL)
        qmp._wait_socket(sock, proc, 20)
        mon = qmp.connect(sock)
        for name, ro in (('rw', False), ('ro', True)):
            img = os.path.join(d, '%s-%s.qcow2' % (os.path.basename(sock),
                                                   name))
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img,
                            '1M'], check=True)
            mon.command('blockdev-add', {
                'driver': 'qcow2', 'node-name': name, 'read-only': ro,
                'discard': 'unmap',
                'file': {'driver': 'file', 'filename': img}})
        replies = [mon.hmp(line) for line, _ in CASES]
        mon.command('quit')
        mon.close()
        proc.wait(20)
    with open(out_path) as f:
        return replies, f.read()


def main():
    vbackupd = sys.argv[1]
    t = Tap('vbackupd', 'qemu')
    with tempfile.TemporaryDirectory() as d:
        q_sock = os.path.join(d, 'q.sock')
        theirs, q_out = session(
            [QEMU, '-machine', 'none', '-nodefaults', '-display', 'none',
             '-chardev', 'socket,id=m0,path=%s,server=on,wait=off' % q_sock,
             '-mon', 'chardev=m0,mode=control'], q_sock, d, True)
        v_sock = os.path.join(d, 'v.sock')
        ours, v_out = session(
            [vbackupd, '--qmp', v_sock, '--state-dir',
             os.path.join(d, 'state'), '--foreground'], v_sock, d, False)
    for (line, where), a, b in zip(CASES, ours, theirs):
        if where == 'reply':
            t.eq(a, b, 'HMP %s: same answer' % line)
        else:
            t.eq(b, '', 'HMP %s: QEMU answers "" (qemu-io text on its '
                 'stdout)' % line)
            t.ok(a.endswith('\r\n'), 'HMP %s: vbackupd answers with '
                 'qemu-io\'s text' % line, repr(a))
    # QEMU's stdout holds, in order, the reports of the successful
    # commands and the texts of the failed ones: vbackupd printed the
    # former and answered the latter.
    v_printed = mask(v_out).split('\n')
    want = mask(q_out)
    got = []
    for (line, where), a in zip(CASES, ours):
        if where == 'stdout':
            got.append(mask(a))
    ours_all = mask(v_out) + ''.join(got)
    t.eq(sorted(line for line in ours_all.split('\n') if line),
         sorted(line for line in want.split('\n') if line),
         'qemu-io texts: vbackupd stdout + answers == QEMU stdout + stderr '
         '(timings masked)')
    t.ok(len(v_printed) > 5, 'vbackupd printed the successful reports',
         v_out)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
