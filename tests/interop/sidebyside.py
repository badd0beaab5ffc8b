"""sidebyside.py: shared frame of the tests that run vbackupd and
qemu-storage-daemon 7.2 on copies of the same image and judge the
results with the real qemu-img.

  Tap        TAP output (taplib.py), labelled vbackup / QEMU
  Daemons    a vbackupd and a qemu-storage-daemon, started and quit
             together; cmd() sends one command to both and returns the
             pair of replies
  qemu_img() the real qemu-img, returning (rc, stdout+stderr)
"""

import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402,F401  (re-exported for the tests)

QEMU_IMG = '/usr/bin/qemu-img'
QEMU_IO = '/usr/bin/qemu-io'


def run(*argv):
    res = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def qemu_img(*args):
    return run(QEMU_IMG, *args)


def qemu_io(img, *cmds):
    argv = [QEMU_IO]
    for c in cmds:
        argv += ['-c', c]
    return run(*(argv + [img]))


def img_info(img):
    rc, out = qemu_img('info', '--force-share', '--output=json', img)
    return json.loads(out) if rc == 0 else {'error': out}


def strip_sizes(value):
    """Zero the sizes of host files (they depend on the writer)."""
    if isinstance(value, dict):
        return {k: (0 if k == 'actual-size' or
                    (k == 'virtual-size' and value.get('format') == 'file')
                    else strip_sizes(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_sizes(v) for v in value]
    return value


class Daemons:
    """vbackupd and qemu-storage-daemon side by side in @tmp."""

    def __init__(self, exe, tmp, tag):
        self.exe = exe
        self.tmp = tmp
        self.tag = tag
        self.procs = []
        self.mons = []

    def start(self):
        vsock = os.path.join(self.tmp, 'v-%s.sock' % self.tag)
        qsock = os.path.join(self.tmp, 'q-%s.sock' % self.tag)
        state = os.path.join(self.tmp, 'state-%s' % self.tag)
        os.makedirs(state, exist_ok=True)
        self.procs = [qmp.start_vbackupd(self.exe, vsock, state),
                      qmp.start_qsd(qsock)]
        self.mons = [qmp.connect(vsock), qmp.connect(qsock)]
        return self

    def cmd(self, name, args_ours, args_theirs=None):
        """Send @name to both; returns (our reply, QEMU's reply)."""
        if args_theirs is None:
            args_theirs = args_ours
        return (self.mons[0].cmd(name, args_ours),
                self.mons[1].cmd(name, args_theirs))

    def quit(self):
        """`quit` both; returns their exit statuses and stderr texts."""
        out = []
        for mon, proc in zip(self.mons, self.procs):
            try:
                mon.cmd('quit')
            except (ConnectionError, OSError):
                pass
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                qmp.stop(proc)
            err = proc.stderr.read().decode('utf-8', 'replace')
            proc.stderr.close()
            mon.close()
            out.append((proc.returncode, err))
        self.procs, self.mons = [], []
        return out

    def kill(self, sig=signal.SIGTERM):
        for proc in self.procs:
            qmp.stop(proc, sig)
            proc.stderr.close()
        for mon in self.mons:
            mon.close()
        self.procs, self.mons = [], []
