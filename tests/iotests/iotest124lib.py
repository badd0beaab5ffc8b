"""iotest124lib.py: the little harness tests/iotests/124 runs on.

A stand-in for the parts of QEMU's iotests python package that iotest 124
uses, written for vbackupd's QMP door (tests/interop/qmp.py):

  VM             one vbackupd per test: launch(), cmd(), qmp(),
                 hmp_qemu_io(), event_wait() with QEMU's recursive match,
                 get_qmp_events(), check_bitmap_status(), shutdown()
  QMPTestCase    unittest.TestCase with assert_qmp(), dictpath(),
                 assert_no_active_block_jobs(), wait_until_completed()
  qemu_img(), qemu_io(), compare_images(), try_remove()
                 the real qemu-img / qemu-io on image files
  main()         runs the tests with unittest, output on stdout

vbackupd has no -drive option: a test's drive is a qcow2 node added with
blockdev-add, named by the drive id ("drive0"), which is also the name
drive-backup, block_resize and qemu-io take as "device".

Environment: VBACKUPD (path of the daemon; else VBK_BUILD_ROOT/plugin/
vbackupd), IOTEST_DIR (scratch directory; else a fresh temporary one).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'interop'))
import qmp  # noqa: E402

imgfmt = 'qcow2'
test_dir = os.environ.get('IOTEST_DIR') or tempfile.mkdtemp(prefix='iot124-')
os.makedirs(test_dir, exist_ok=True)
ExecuteError = qmp.QMPError


def vbackupd_path():
    exe = os.environ.get('VBACKUPD')
    if not exe:
        exe = os.path.join(os.environ.get('VBK_BUILD_ROOT', ''), 'plugin',
                           'vbackupd')
    return exe


def _run(argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    return p.returncode, p.stdout


def qemu_img(*args):
    rc, out = _run(['qemu-img'] + list(args))
    if rc != 0:
        raise RuntimeError('qemu-img %s failed: %s' % (' '.join(args), out))
    return out


def qemu_io(*args):
    rc, out = _run(['qemu-io', '-f', imgfmt] + list(args))
    if rc != 0 or 'error' in out.lower():
        raise RuntimeError('qemu-io %s failed: %s' % (' '.join(args), out))
    return out


def compare_images(img1, img2, fmt1=imgfmt, fmt2=imgfmt):
    """True when qemu-img compare finds the guest-visible data equal."""
    rc, out = _run(['qemu-img', 'compare', '-f', fmt1, '-F', fmt2,
                    img1, img2])
    if rc not in (0, 1):
        raise RuntimeError('qemu-img compare: %s' % out)
    if rc == 1:
        sys.stderr.write('compare %s %s: %s' % (img1, img2, out))
    return rc == 0


def try_remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def match_event(pattern, obj):
    """QEMU's event matching: every key of @pattern must be in @obj with
    an equal value, dicts being compared recursively the same way."""
    if pattern is None:
        return True
    for key, want in pattern.items():
        if key not in obj:
            return False
        if isinstance(want, dict):
            if not isinstance(obj[key], dict) or \
                    not match_event(want, obj[key]):
                return False
        elif obj[key] != want:
            return False
    return True


class VM:
    """One vbackupd with a QMP monitor."""

    def __init__(self):
        self.proc = None
        self.mon = None
        self.dir = None
        self.drives = []

    def add_drive(self, path, fmt=imgfmt, node_id='drive0'):
        """A qcow2 drive, opened at launch() by blockdev-add."""
        self.drives.append((node_id, path, fmt))

    def launch(self):
        self.dir = tempfile.mkdtemp(prefix='vm-', dir=test_dir)
        sock = os.path.join(self.dir, 'qmp.sock')
        self.proc = qmp.start_vbackupd(vbackupd_path(), sock,
                                       os.path.join(self.dir, 'state'))
        self.mon = qmp.connect(sock, timeout=60)
        for node_id, path, fmt in self.drives:
            self.cmd('blockdev-add', node_name=node_id, driver=fmt,
                     file={'driver': 'file', 'filename': path})

    def qmp(self, execute, /, **kwargs):
        return self.mon.cmd(execute, **kwargs)

    def cmd(self, execute, /, **kwargs):
        return self.mon.command(execute, **kwargs)

    def hmp_qemu_io(self, drive, line):
        out = self.mon.hmp('qemu-io %s "%s"' % (drive, line))
        if 'error' in out.lower() or 'failed' in out.lower():
            raise RuntimeError('qemu-io %s %s: %s' % (drive, line, out))
        return out

    def event_wait(self, name, timeout=60.0, match=None):
        return self.mon.wait_event(name, lambda e: match_event(match, e),
                                   timeout)

    def get_qmp_events(self, wait=False):
        return self.mon.events(0.1 if wait else 0.0)

    def get_bitmap(self, node, name):
        for n in self.cmd('query-named-block-nodes'):
            if n['node-name'] == node:
                for bm in n.get('dirty-bitmaps', []):
                    if bm.get('name') == name:
                        return bm
        return None

    def check_bitmap_status(self, node, name, fields):
        bm = self.get_bitmap(node, name)
        if bm is None:
            sys.stderr.write('bitmap %s on %s not found\n' % (name, node))
            return False
        for key, want in fields.items():
            if bm.get(key) != want:
                sys.stderr.write('bitmap %s: %s is %r, want %r\n'
                                 % (name, key, bm.get(key), want))
                return False
        return True

    def shutdown(self):
        if self.proc is None:
            return
        try:
            self.mon.cmd('quit')
        except (OSError, ConnectionError, TimeoutError):
            pass
        rc = qmp.stop(self.proc, timeout=30)
        err = self.proc.stderr.read().decode('utf-8', 'replace')
        self.mon.close()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        if rc not in (0, None) and rc >= 0:
            raise RuntimeError('vbackupd exited with %d: %s' % (rc, err))
        if rc is None or rc < 0:
            raise RuntimeError('vbackupd did not quit cleanly (%r): %s'
                               % (rc, err))


class QMPTestCase(unittest.TestCase):
    """TestCase with the QMP assertions iotests use."""

    def dictpath(self, d, path):
        """Follow 'a/b/0/c' through dicts and lists; fail if absent."""
        for comp in path.split('/'):
            if isinstance(d, list):
                try:
                    d = d[int(comp)]
                except (ValueError, IndexError):
                    self.fail('no element %r in path %r' % (comp, path))
            elif isinstance(d, dict) and comp in d:
                d = d[comp]
            else:
                self.fail('no key %r in path %r of %r' % (comp, path, d))
        return d

    def assert_qmp(self, d, path, value):
        got = self.dictpath(d, path)
        self.assertEqual(got, value, 'value of %r' % path)

    def assert_no_active_block_jobs(self):
        self.assertEqual(self.vm.cmd('query-block-jobs'), [])

    def wait_until_completed(self, drive):
        ev = self.vm.event_wait('BLOCK_JOB_COMPLETED',
                                match={'data': {'device': drive}})
        self.assertNotIn('error', ev['data'])
        self.assert_qmp(ev, 'data/offset', ev['data']['len'])
        return ev


def main():
    exe = vbackupd_path()
    if not os.access(exe, os.X_OK):
        sys.stderr.write('no vbackupd at %r (set VBACKUPD)\n' % exe)
        sys.exit(2)
    own_dir = not os.environ.get('IOTEST_DIR')
    prog = unittest.main(module='__main__', exit=False,
                         testRunner=unittest.TextTestRunner(
                             stream=sys.stdout, verbosity=1))
    if own_dir:
        shutil.rmtree(test_dir, ignore_errors=True)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
