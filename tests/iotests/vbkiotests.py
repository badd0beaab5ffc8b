"""vbkiotests.py: the little frame vbackup's ports of QEMU iotests run in.

QEMU's iotests boot a "VM" with a drive and talk QMP to it; here the VM is
a vbackupd process and the drive is a blockdev-add of the same image, so
a reboot is: quit vbackupd (persistent bitmaps are stored on close), start
a new one, blockdev-add the image again.  Logging follows the conventions
of the golden logs in ../shared/conformance/iotests/:

  log(text)               the text and a newline
  log(obj, indent=2)      JSON with sorted keys (pretty when indent is set)
  VM.qmp_log(cmd, **kw)   the command as {"execute", "arguments"} with the
                          arguments sorted, then the reply (sorted keys)

Keyword arguments name QMP members with '_' for '-', as iotests do.
The vbackupd to run comes from $VBACKUPD, else from $VBK_BUILD_ROOT
(set by meson), else ./build.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'interop'))
import qmp  # noqa: E402

QEMU_IMG = shutil.which('qemu-img') or '/usr/bin/qemu-img'
QEMU_IO = shutil.which('qemu-io') or '/usr/bin/qemu-io'


def vbackupd_exe():
    exe = os.environ.get('VBACKUPD')
    if exe:
        return exe
    build = os.environ.get('VBK_BUILD_ROOT',
                           os.path.join(HERE, '..', '..', 'build'))
    return os.path.join(build, 'plugin', 'vbackupd')


def _sorted(value):
    """Every dict sorted by key, recursively (iotests' ordered_qmp)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def log(msg, indent=None):
    if isinstance(msg, (dict, list)):
        print(json.dumps(msg, sort_keys=True, indent=indent))
    else:
        print(msg)
    sys.stdout.flush()


def qmp_args(kwargs):
    return {k.replace('_', '-'): v for k, v in kwargs.items()}


def qemu_img(*args):
    """Run the real qemu-img; raise with its output if it fails."""
    res = subprocess.run([QEMU_IMG] + [str(a) for a in args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError('qemu-img %s failed: %s' % (' '.join(args),
                                                       res.stdout))
    return res.stdout


class TestDir:
    """A scratch directory (TEST_DIR), removed on exit."""

    def __init__(self, prefix='vbk-iotest-'):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def file(self, name):
        return os.path.join(self.path, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


class VM:
    """A vbackupd with one qcow2 image attached as node @node_name."""

    def __init__(self, test_dir, node_name='drive0'):
        self.dir = test_dir
        self.node_name = node_name
        self.image = None
        self.read_only = False
        self.proc = None
        self.mon = None
        self.boots = 0
        self.stderr_text = ''

    def add_drive(self, image, read_only=False):
        self.image = image
        self.read_only = read_only
        return self

    def launch(self):
        self.boots += 1
        sock = os.path.join(self.dir, 'qmp-%d.sock' % self.boots)
        state = os.path.join(self.dir, 'state-%d' % self.boots)
        os.makedirs(state, exist_ok=True)
        self.proc = qmp.start_vbackupd(vbackupd_exe(), sock, state)
        self.mon = self._connect(sock)
        if self.image:
            self.mon.command('blockdev-add', {
                'driver': 'qcow2', 'node-name': self.node_name,
                'read-only': self.read_only,
                'file': {'driver': 'file', 'filename': self.image}})
        return self

    def _connect(self, sock):
        # the socket's path appears at bind(), a moment before listen()
        deadline = time.monotonic() + 10
        while True:
            try:
                return qmp.connect(sock)
            except ConnectionRefusedError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def qmp(self, cmd, **kwargs):
        return self.mon.cmd(cmd, qmp_args(kwargs))

    def command(self, cmd, **kwargs):
        return self.mon.command(cmd, qmp_args(kwargs))

    def qmp_log(self, cmd, **kwargs):
        args = _sorted(qmp_args(kwargs))
        print(json.dumps({'execute': cmd, 'arguments': args}))
        reply = self.mon.cmd(cmd, args)
        log(reply)
        return reply

    def hmp_qemu_io(self, drive, line):
        return self.mon.hmp('qemu-io %s "%s"' % (drive, line))

    def shutdown(self):
        """`quit` (bitmaps are stored as the nodes close) and wait."""
        if not self.proc:
            return
        try:
            self.mon.cmd('quit')
        except (ConnectionError, OSError):
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            qmp.stop(self.proc)
        self.stderr_text = self.proc.stderr.read().decode('utf-8', 'replace')
        self.proc.stderr.close()
        self.mon.close()
        status = self.proc.returncode
        self.proc = None
        self.mon = None
        if status != 0:
            raise RuntimeError('vbackupd exited with %s: %s'
                               % (status, self.stderr_text))

    def get_log(self):
        """What the last vbackupd wrote to stderr."""
        return self.stderr_text

    def kill(self):
        if self.proc:
            qmp.stop(self.proc)
            self.proc.stderr.close()
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
