#!/usr/bin/python3
"""check-bitmap-persist.py: persistent qcow2 bitmaps, vbackup <-> QEMU 7.2.

Usage: check-bitmap-persist.py VBACKUPD_EXE        (prints TAP)

vbackupd (over QMP) and the real QEMU tools work on the same images:
  vbk->qemu  bitmaps vbackup stored: `qemu-img info` (names, granularities,
             flags, directory order — the same as qemu-storage-daemon gives
             for the same commands), `qemu-img check`, and their contents
             through `qemu-nbd -B` + `nbdinfo --map`, and through
             qemu-storage-daemon's x-debug-block-dirty-bitmap-sha256.
  qemu->vbk  bitmaps made by `qemu-img bitmap --add/--disable/--merge` and
             dirtied by qemu-io load with QEMU's hashes, flags and order;
             in_use bitmaps left by a killed qemu-io load inconsistent.
  crash      kill -9 of vbackupd with bitmaps open: the image passes
             `qemu-img check`, the bitmaps are in-use on disk, reload as
             inconsistent and can be removed.
  v2/stale   QEMU's refusal on v2; a cleared autoclear bit is handled as
             QEMU handles it (compared with qemu-storage-daemon).
  resize     grow in vbackup, shrink with `qemu-img resize --shrink`.
  damaged    broken extension/directory/table: the same error as QEMU's,
             and the file is not written.
"""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402

MiB = 1 << 20


def run(*cmd, check=True):
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (cmd, p.returncode,
                                                   p.stderr))
    return p


def info_bitmaps(img):
    out = json.loads(run('qemu-img', 'info', '-U', '--output=json',
                         img).stdout)
    return out['format-specific']['data'].get('bitmaps', [])


def check(img):
    p = run('qemu-img', 'check', img, check=False)
    return p.returncode, p.stdout + p.stderr


def file_hash(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def bitmap_sha(size, gran, dirty_extents):
    """QEMU's x-debug sha256 of a bitmap with @dirty_extents set."""
    nbits = (size + gran - 1) // gran
    arr = bytearray(max(1, (nbits + 63) // 64) * 8)
    for off, length in dirty_extents:
        for bit in range(off // gran, (off + length + gran - 1) // gran):
            arr[bit // 8] |= 1 << (bit % 8)
    return hashlib.sha256(bytes(arr)).hexdigest()


def qcow2_node(name, img, read_only=False):
    args = {'driver': 'qcow2', 'node-name': name,
            'file': {'driver': 'file', 'filename': img}}
    if read_only:
        args['read-only'] = True
    return args


def bitmaps_of(mon, node):
    for n in mon.command('query-named-block-nodes'):
        if n['node-name'] == node:
            return n.get('dirty-bitmaps', [])
    raise KeyError(node)


def sha_of(mon, node, name):
    return mon.command('x-debug-block-dirty-bitmap-sha256', node=node,
                       name=name)['sha256']


def connect(sock):
    """qmp.connect(), retried while the socket exists but does not listen
    yet (bind() comes before listen())."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return qmp.connect(sock)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


QSD_CRASHED = object()


class Daemons:
    """One vbackupd and helpers to ask qemu-storage-daemon."""

    def __init__(self, exe, tmp):
        self.exe = exe
        self.tmp = tmp
        self.vbk = None
        self.mon = None
        self.count = 0
        self.stderr = ''

    def start(self):
        self.count += 1
        sock = os.path.join(self.tmp, 'v%d.sock' % self.count)
        self.vbk = qmp.start_vbackupd(self.exe, sock,
                                      os.path.join(self.tmp, 'state'))
        self.mon = connect(sock)
        return self.mon

    def stop(self, sig=signal.SIGTERM):
        if self.mon:
            self.mon.close()
            self.mon = None
        if self.vbk:
            qmp.stop(self.vbk, sig)
            err = self.vbk.stderr.read().decode('utf-8', 'replace')
            self.vbk = None
            self.stderr += err
            return err
        return ''

    def qsd(self, fn):
        """Run fn(mon) against a fresh qemu-storage-daemon, then quit."""
        self.count += 1
        sock = os.path.join(self.tmp, 'q%d.sock' % self.count)
        proc = qmp.start_qsd(sock)
        mon = connect(sock)
        try:
            return fn(mon)
        finally:
            try:
                mon.cmd('quit')
            except (ConnectionError, OSError):
                pass
            mon.close()
            qmp.stop(proc)
            proc.stderr.close()

    def qsd_bitmaps(self, img):
        """(query list, {name: sha}) as QEMU sees @img (read-only)."""
        def fn(mon):
            mon.command('blockdev-add', qcow2_node('q0', img, True))
            bms = bitmaps_of(mon, 'q0')
            return bms, {b['name']: sha_of(mon, 'q0', b['name'])
                         for b in bms}
        return self.qsd(fn)

    def qsd_error(self, cmds):
        """The error text of the last of @cmds on qemu-storage-daemon.
        qsd 7.2 sometimes segfaults on a damaged bitmap directory (seen
        in CI, not every time): retried, QSD_CRASHED if it always does."""
        def fn(mon):
            reply = None
            for name, args in cmds:
                reply = mon.cmd(name, args)
            return reply.get('error', {}).get('desc')
        for _ in range(3):
            try:
                return self.qsd(fn)
            except (ConnectionError, EOFError):
                continue
        return QSD_CRASHED


def nbd_extents(tmp, img, name):
    """Dirty extents of bitmap @name via qemu-nbd -B and nbdinfo --map."""
    sock = os.path.join(tmp, 'nbd.sock')
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(['qemu-nbd', '-r', '-f', 'qcow2', '-B', name,
                             '--socket=' + sock, img],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        while True:  # the socket exists a moment before it listens
            p = run('nbdinfo', '--map=qemu:dirty-bitmap:' + name,
                    'nbd+unix:///?socket=' + sock, check=False)
            if p.returncode == 0 or time.monotonic() > deadline or \
                    'Connection refused' not in p.stderr:
                break
            time.sleep(0.02)
        if p.returncode != 0:
            raise RuntimeError('nbdinfo failed: ' + p.stderr)
        out = p.stdout
    finally:
        proc.terminate()
        proc.wait()
    ext = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 3 and int(f[2]) & 1:
            ext.append((int(f[0]), int(f[1])))
    return ext


def simple(bms):
    return [{k: b[k] for k in ('name', 'granularity', 'recording', 'count',
                               'persistent', 'busy')}
            | ({'inconsistent': True} if b.get('inconsistent') else {})
            for b in bms]


# ---- scenarios ---------------------------------------------------------

ADDS = [('b0', None, False), ('b1', 131072, False), ('b2', None, True)]


def add_bitmaps(mon, node):
    for name, gran, disabled in ADDS:
        args = {'node': node, 'name': name, 'persistent': True}
        if gran:
            args['granularity'] = gran
        if disabled:
            args['disabled'] = True
        mon.command('block-dirty-bitmap-add', args)


def test_vbk_to_qemu(t, d, tmp):
    img = os.path.join(tmp, 'a.qcow2')
    twin = os.path.join(tmp, 'a-twin.qcow2')
    for p in (img, twin):
        run('qemu-img', 'create', '-q', '-f', 'qcow2', p, '64M')
    mon = d.mon
    mon.command('blockdev-add', qcow2_node('d0', img))
    add_bitmaps(mon, 'd0')
    mon.hmp('qemu-io d0 "write 0 1M"')
    mon.hmp('qemu-io d0 "write 32M 64k"')
    mon.command('block-dirty-bitmap-disable', node='d0', name='b1')
    mon.hmp('qemu-io d0 "write 48M 4k"')
    ours = {n: sha_of(mon, 'd0', n) for n, _, _ in ADDS}
    before = simple(bitmaps_of(mon, 'd0'))
    mon.command('blockdev-del', node_name='d0')

    # QEMU doing the same commands on a twin image gives the directory
    def same_in_qemu(qm):
        qm.command('blockdev-add', qcow2_node('d0', twin))
        add_bitmaps(qm, 'd0')
        qm.command('block-dirty-bitmap-disable', node='d0', name='b1')
        qm.command('blockdev-del', node_name='d0')
    d.qsd(same_in_qemu)
    got = info_bitmaps(img)
    t.eq(got, info_bitmaps(twin),
         'vbk->qemu: qemu-img info names/granularities/flags/order as QEMU')
    t.eq([b['name'] for b in got], ['b2', 'b1', 'b0'],
         'vbk->qemu: new bitmaps appended newest first')
    rc, out = check(img)
    t.ok(rc == 0 and 'No errors' in out and 'leak' not in out,
         'vbk->qemu: qemu-img check clean', out)
    for name, gran, _ in ADDS:
        ext = nbd_extents(tmp, img, name)
        t.eq(bitmap_sha(64 * MiB, gran or 65536, ext), ours[name],
             'vbk->qemu: nbdinfo --map of %s equals vbackup\'s bitmap' % name)
    t.ok(nbd_extents(tmp, img, 'b0') == [(0, MiB), (32 * MiB, 64 * 1024),
                                         (48 * MiB, 64 * 1024)],
         'vbk->qemu: b0 extents are the writes')
    qbms, qsha = d.qsd_bitmaps(img)
    t.eq(qsha, ours, 'vbk->qemu: qemu-storage-daemon hashes equal vbackup\'s')
    mon.command('blockdev-add', qcow2_node('d0', img))
    t.eq(simple(bitmaps_of(mon, 'd0')), simple(qbms),
         'vbk->vbk: reloaded bitmaps (reverse directory order, counts, '
         'recording) as QEMU shows them')
    t.eq(sorted(simple(bitmaps_of(mon, 'd0')), key=lambda b: b['name']),
         sorted(before, key=lambda b: b['name']),
         'vbk->vbk: counts and recording survive the round trip')
    t.eq({n: sha_of(mon, 'd0', n) for n, _, _ in ADDS}, ours,
         'vbk->vbk: reloaded contents unchanged')
    t.ok(all('in-use' in b['flags'] for b in info_bitmaps(img)),
         'vbk: a read-write open marks the bitmaps in-use on disk at once')
    mon.command('blockdev-del', node_name='d0')
    t.ok(not any('in-use' in b['flags'] for b in info_bitmaps(img)),
         'vbk: close clears in-use')


def test_cycles(t, d, tmp):
    """Sessions that add, remove and dirty bitmaps leak no cluster."""
    img = os.path.join(tmp, 'y.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '32M')
    mon = d.mon
    clean = True
    names = []
    for i in range(6):
        mon.command('blockdev-add', qcow2_node('y', img))
        mon.command('block-dirty-bitmap-add', node='y', name='c%d' % i,
                    persistent=True, granularity=4096 << (i % 3))
        names.append('c%d' % i)
        if i >= 2:
            mon.command('block-dirty-bitmap-remove', node='y',
                        name='c%d' % (i - 2))
            names.remove('c%d' % (i - 2))
        mon.hmp('qemu-io y "write %dM 300k"' % (i * 3))
        shas = {n: sha_of(mon, 'y', n) for n in names}
        mon.command('blockdev-del', node_name='y')
        rc, out = check(img)
        clean = clean and rc == 0 and 'leak' not in out
    t.ok(clean, 'cycles: qemu-img check clean after every session')
    t.eq(sorted(b['name'] for b in info_bitmaps(img)), sorted(names),
         'cycles: the directory holds exactly the live bitmaps')
    t.eq(d.qsd_bitmaps(img)[1], shas, 'cycles: contents as QEMU reads them')


def make_qemu_image(img):
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M')
    run('qemu-img', 'bitmap', '--add', img, 'q0')
    run('qemu-img', 'bitmap', '--add', '-g', '131072', img, 'q1')
    run('qemu-img', 'bitmap', '--add', '-g', '4096', img, 'q2')
    run('qemu-io', '-f', 'qcow2', '-c', 'write 0 1M', '-c',
        'write 10M 64k', img)
    run('qemu-img', 'bitmap', '--disable', img, 'q2')
    run('qemu-img', 'bitmap', '--add', '--disable', img, 'q3')
    run('qemu-io', '-f', 'qcow2', '-c', 'write 20M 4k', '-c',
        'discard 40M 128k', img)
    run('qemu-img', 'bitmap', '--merge', 'q2', img, 'q3')


def test_qemu_to_vbk(t, d, tmp):
    img = os.path.join(tmp, 'q.qcow2')
    make_qemu_image(img)
    qbms, qsha = d.qsd_bitmaps(img)
    mon = d.mon
    mon.command('blockdev-add', qcow2_node('d1', img))
    ours = bitmaps_of(mon, 'd1')
    t.eq(simple(ours), simple(qbms),
         'qemu->vbk: query (order, granularity, count, recording) as QEMU')
    t.eq({b['name']: sha_of(mon, 'd1', b['name']) for b in ours}, qsha,
         'qemu->vbk: x-debug sha256 of every bitmap as QEMU')
    t.eq(sorted(b['name'] for b in ours if not b['recording']), ['q2', 'q3'],
         'qemu->vbk: disabled bitmaps stay disabled')
    mon.command('blockdev-del', node_name='d1')
    t.eq(d.qsd_bitmaps(img)[1], qsha, 'qemu->vbk->qemu: contents kept')
    rc, out = check(img)
    t.ok(rc == 0 and 'leak' not in out, 'qemu->vbk: check clean after store',
         out)

    # in_use bitmaps left by a qemu-io that died
    run('qemu-io', '-f', 'qcow2', '-c', 'write 0 64k', '-c', 'sigraise 9',
        img, check=False)
    flags = {b['name']: b['flags'] for b in info_bitmaps(img)}
    t.ok(all('in-use' in f for f in flags.values()),
         'killed qemu-io leaves in-use bitmaps', flags)
    qbms, qsha = d.qsd_bitmaps(img)
    mon.command('blockdev-add', qcow2_node('d1', img))
    ours = bitmaps_of(mon, 'd1')
    t.eq(simple(ours), simple(qbms),
         'in_use: vbackup loads them inconsistent, count 0, not recording')
    t.ok(all(b.get('inconsistent') and not b['recording'] for b in ours),
         'in_use: every bitmap inconsistent', ours)
    t.eq({b['name']: sha_of(mon, 'd1', b['name']) for b in ours}, qsha,
         'in_use: sha256 (empty) as QEMU')
    mon.command('blockdev-del', node_name='d1')
    t.eq({b['name']: b['flags'] for b in info_bitmaps(img)}, flags,
         'in_use: inconsistent bitmaps left untouched on disk')


def test_crash(t, d, tmp):
    img = os.path.join(tmp, 'c.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M')
    mon = d.mon
    mon.command('blockdev-add', qcow2_node('c0', img))
    for n in ('p0', 'p1'):
        mon.command('block-dirty-bitmap-add', node='c0', name=n,
                    persistent=True)
    mon.hmp('qemu-io c0 "write 0 256k"')
    mon.command('blockdev-del', node_name='c0')
    mon.command('blockdev-add', qcow2_node('c0', img))
    mon.command('block-dirty-bitmap-add', node='c0', name='p2',
                persistent=True)
    mon.hmp('qemu-io c0 "write 8M 1M"')
    d.stop(signal.SIGKILL)
    rc, out = check(img)
    t.ok(rc in (0, 3) and 'ERROR' not in out,
         'crash: qemu-img check finds no corruption (rc %d)' % rc, out)
    bms = info_bitmaps(img)
    t.eq([(b['name'], b['flags']) for b in bms],
         [('p1', ['in-use', 'auto']), ('p0', ['in-use', 'auto'])],
         'crash: stored bitmaps are in-use on disk, unstored one absent')
    mon = d.start()
    mon.command('blockdev-add', qcow2_node('c0', img))
    ours = bitmaps_of(mon, 'c0')
    t.ok(len(ours) == 2 and all(b.get('inconsistent') and not b['recording']
                                and b['count'] == 0 for b in ours),
         'crash: bitmaps reload inconsistent, not recording', ours)
    r = mon.cmd('block-dirty-bitmap-clear', node='c0', name='p0')
    t.eq(r.get('error', {}).get('desc'),
         "Bitmap 'p0' is inconsistent and cannot be used",
         'crash: an inconsistent bitmap cannot be used')
    mon.command('block-dirty-bitmap-remove', node='c0', name='p0')
    t.eq([b['name'] for b in info_bitmaps(img)], ['p1'],
         'crash: remove deletes the bitmap from the file at once')
    mon.command('block-dirty-bitmap-remove', node='c0', name='p1')
    t.eq(info_bitmaps(img), [], 'crash: last remove drops the extension')
    mon.command('blockdev-del', node_name='c0')
    rc, out = check(img)
    t.ok(rc == 0 and 'leak' not in out, 'crash: image clean after removal',
         out)

    # a clean stop (SIGTERM) with the image open stores the bitmaps
    mon.command('blockdev-add', qcow2_node('c0', img))
    mon.command('block-dirty-bitmap-add', node='c0', name='p3',
                persistent=True)
    mon.hmp('qemu-io c0 "write 3M 128k"')
    d.stop()
    t.eq([(b['name'], b['flags']) for b in info_bitmaps(img)],
         [('p3', ['auto'])], 'SIGTERM: vbackupd stores open bitmaps')
    t.eq(nbd_extents(tmp, img, 'p3'), [(3 * MiB, 128 * 1024)],
         'SIGTERM: stored contents are the writes')
    t.eq(check(img)[0], 0, 'SIGTERM: image clean')
    d.start()


def test_v2_and_stale(t, d, tmp):
    v2 = os.path.join(tmp, 'v2.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2,
        '16M')
    cmds = [('blockdev-add', qcow2_node('d0', v2)),
            ('block-dirty-bitmap-add', {'node': 'd0', 'name': 'b0',
                                        'persistent': True})]
    want = d.qsd_error(cmds)
    mon = d.mon
    mon.command(*cmds[0])
    got = mon.cmd(*cmds[1]).get('error', {}).get('desc')
    t.eq(got, want, 'v2: refusal with QEMU\'s message')
    for args, what in (({'granularity': 1 << 8}, 'granularity'),
                       ({'name': 'x' * 1024}, 'name length')):
        a = dict(cmds[1][1], **args)
        want = d.qsd_error([cmds[0], ('block-dirty-bitmap-add', a)])
        mon2 = mon.cmd('block-dirty-bitmap-add', a)
        t.eq(mon2.get('error', {}).get('desc'), want,
             'add: %s refusal as QEMU' % what)
    mon.command('blockdev-del', node_name='d0')
    big = os.path.join(tmp, 'big.qcow2')
    for size, gran in (('2T', 512), ('2049G', 512), ('5T', 1024)):
        run('qemu-img', 'create', '-q', '-f', 'qcow2', big, size)
        shutil.copy(big, big + '.twin')
        add = ('block-dirty-bitmap-add', {'node': 'd0', 'name': 'b0',
                                          'persistent': True,
                                          'granularity': gran})
        cmds = [('blockdev-add', qcow2_node('d0', big)), add]
        want = d.qsd_error([('blockdev-add',
                             qcow2_node('d0', big + '.twin')), add])
        mon.command(*cmds[0])
        t.eq(mon.cmd(*cmds[1]).get('error', {}).get('desc'), want,
             'add: bitmap size limit (%s, %d) as QEMU' % (size, gran))
        mon.command('blockdev-del', node_name='d0')

    # autoclear bit 0 cleared by "a program lacking bitmap support"
    img = os.path.join(tmp, 's.qcow2')
    twin = os.path.join(tmp, 's-twin.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '16M')
    run('qemu-img', 'bitmap', '--add', img, 'b0')
    run('qemu-io', '-f', 'qcow2', '-c', 'write 0 64k', img)
    with open(img, 'r+b') as f:
        f.seek(88)
        ac = struct.unpack('>Q', f.read(8))[0]
        f.seek(88)
        f.write(struct.pack('>Q', ac & ~1))
    shutil.copy(img, twin)
    d.qsd(lambda qm: qm.command('blockdev-add', qcow2_node('d0', twin)))
    mon.command('blockdev-add', qcow2_node('d0', img))
    t.eq(bitmaps_of(mon, 'd0'), [], 'stale: no bitmap is loaded')
    mon.command('blockdev-del', node_name='d0')
    t.eq(info_bitmaps(img), info_bitmaps(twin),
         'stale: a read-write open drops the extension as QEMU')
    t.eq(check(img), check(twin), 'stale: qemu-img check as after QEMU')
    err = d.stop()
    t.ok('a program lacking bitmap support modified this file, so all '
         'bitmaps are now considered inconsistent' in err,
         'stale: QEMU\'s warning', err)
    d.start()


def test_resize(t, d, tmp):
    img = os.path.join(tmp, 'r.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M')
    run('qemu-img', 'bitmap', '--add', img, 'r0')
    run('qemu-img', 'bitmap', '--add', '-g', '1M', img, 'r1')
    run('qemu-io', '-f', 'qcow2', '-c', 'write 1M 1M', '-c', 'write 60M 4M',
        img)
    mon = d.mon
    mon.command('blockdev-add', qcow2_node('r', img))
    mon.command('block_resize', node_name='r', size=128 * MiB)
    mon.hmp('qemu-io r "write 100M 64k"')
    ours = {n: sha_of(mon, 'r', n) for n in ('r0', 'r1')}
    mon.command('blockdev-del', node_name='r')
    rc, out = check(img)
    t.ok(rc == 0 and 'leak' not in out, 'grow: qemu-img check clean', out)
    qbms, qsha = d.qsd_bitmaps(img)
    t.eq(qsha, ours, 'grow: bitmaps follow the new size (QEMU agrees)')
    t.eq(nbd_extents(tmp, img, 'r0'),
         [(MiB, MiB), (60 * MiB, 4 * MiB), (100 * MiB, 64 * 1024)],
         'grow: r0 extents include the write past the old end')
    run('qemu-img', 'resize', '-q', '--shrink', img, '32M')
    qbms, qsha = d.qsd_bitmaps(img)
    mon.command('blockdev-add', qcow2_node('r', img))
    t.eq(simple(bitmaps_of(mon, 'r')), simple(qbms),
         'shrink by qemu-img: vbackup loads the bitmaps as QEMU')
    t.eq({n: sha_of(mon, 'r', n) for n in ('r0', 'r1')}, qsha,
         'shrink by qemu-img: contents as QEMU')
    mon.command('blockdev-del', node_name='r')
    # resize refused while a bitmap is inconsistent
    run('qemu-io', '-f', 'qcow2', '-c', 'sigraise 9', img, check=False)
    twin = os.path.join(tmp, 'r-twin.qcow2')
    shutil.copy(img, twin)
    want = d.qsd_error([('blockdev-add', qcow2_node('r', twin)),
                        ('block_resize', {'node-name': 'r',
                                          'size': 64 * MiB})])
    mon.command('blockdev-add', qcow2_node('r', img))
    got = mon.cmd('block_resize', node_name='r', size=64 * MiB)
    t.eq(got.get('error', {}).get('desc'), want,
         'resize with an inconsistent bitmap refused as QEMU')
    mon.command('blockdev-del', node_name='r')


def test_store_failure(t, d, tmp):
    """An I/O error while storing (injected by blkdebug after the first
    cluster allocation of the store) leaves the old structure: the
    bitmaps are still in-use on disk and reload inconsistent."""
    for what, rule in (('header switch', {'sector': 0}),
                       ('data write', {})):
        img = os.path.join(tmp, 'f.qcow2')
        make_qemu_image(img)
        rule = dict(rule, event='refblock_update_part', iotype='write',
                    errno=5)
        node = qcow2_node('f0', img)
        node['file'] = {'driver': 'blkdebug', 'inject-error': [rule],
                        'image': {'driver': 'file', 'filename': img}}
        mon = d.mon
        mon.command('blockdev-add', node)
        names = sorted(b['name'] for b in bitmaps_of(mon, 'f0'))
        mon.command('blockdev-del', node_name='f0')
        rc, out = check(img)
        t.ok(rc in (0, 3) and 'ERROR' not in out,
             'store fails at %s: no corruption (rc %d)' % (what, rc), out)
        bms = info_bitmaps(img)
        t.ok(sorted(b['name'] for b in bms) == names and
             all('in-use' in b['flags'] for b in bms),
             'store fails at %s: bitmaps still in-use on disk' % what, bms)
        mon.command('blockdev-add', qcow2_node('f0', img))
        t.ok(all(b.get('inconsistent') for b in bitmaps_of(mon, 'f0')),
             'store fails at %s: bitmaps reload inconsistent' % what)
        mon.command('blockdev-del', node_name='f0')
    err = d.stop()
    t.ok('Failed to store dirty bitmaps' in err,
         'store failure is reported on stderr', err)
    d.start()


def find_ext(data):
    """Offset of the bitmaps extension's data in cluster 0."""
    off = struct.unpack('>I', data[100:104])[0]
    while True:
        typ, ln = struct.unpack('>II', data[off:off + 8])
        if typ == 0:
            raise KeyError('no bitmaps extension')
        if typ == 0x23852875:
            return off + 8
        off += 8 + (ln + 7) // 8 * 8


def damage(src, dst, how):
    shutil.copy(src, dst)
    with open(dst, 'r+b') as f:
        data = bytearray(f.read())
    ext = find_ext(data)
    dir_off = struct.unpack('>Q', data[ext + 16:ext + 24])[0]
    tab_off = struct.unpack('>Q', data[dir_off:dir_off + 8])[0]
    how(data, ext, dir_off, tab_off)
    with open(dst, 'wb') as f:
        f.write(data)


def put(data, off, fmt, value):
    data[off:off + struct.calcsize(fmt)] = struct.pack(fmt, value)


DAMAGES = [
    ('ext reserved', lambda d, e, o, t: put(d, e + 4, '>I', 1)),
    ('ext zero bitmaps', lambda d, e, o, t: put(d, e, '>I', 0)),
    ('ext too many bitmaps', lambda d, e, o, t: put(d, e, '>I', 70000)),
    ('ext unaligned directory', lambda d, e, o, t: put(d, e + 16, '>Q',
                                                       o + 512)),
    ('ext directory too big', lambda d, e, o, t: put(d, e + 8, '>Q',
                                                     1024 * 65535 + 8)),
    ('fewer entries', lambda d, e, o, t: put(d, e, '>I', 3)),
    ('more entries', lambda d, e, o, t: put(d, e, '>I', 1)),
    ('extra data', lambda d, e, o, t: put(d, o + 20, '>I', 8)),
    ('granularity bits', lambda d, e, o, t: put(d, o + 17, '>B', 40)),
    ('reserved flag', lambda d, e, o, t: put(d, o + 12, '>I', 6)),
    ('bad type', lambda d, e, o, t: put(d, o + 16, '>B', 2)),
    ('table offset 0', lambda d, e, o, t: put(d, o, '>Q', 0)),
    ('table past the file', lambda d, e, o, t: put(d, o, '>Q', 1 << 40)),
    ('table too small', lambda d, e, o, t: put(d, o + 8, '>I', 0)),
    ('broken directory', lambda d, e, o, t: put(d, e + 8, '>Q', 20)),
    ('table entry reserved bits',
     lambda d, e, o, t: put(d, t, '>Q', (struct.unpack('>Q', bytes(
         d[t:t + 8]))[0]) | 2)),
    ('table entry all-ones with offset',
     lambda d, e, o, t: put(d, t, '>Q', (struct.unpack('>Q', bytes(
         d[t:t + 8]))[0]) | 1)),
]


STRICTER = {'table past the file':
            "Bitmap 'g0' doesn't satisfy the constraints"}


def test_damaged(t, d, tmp):
    base = os.path.join(tmp, 'good.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', base, '64M')
    run('qemu-img', 'bitmap', '--add', base, 'g0')
    run('qemu-img', 'bitmap', '--add', base, 'g1')
    run('qemu-io', '-f', 'qcow2', '-c', 'write 0 64k', base)
    mon = d.mon
    for what, how in DAMAGES:
        img = os.path.join(tmp, 'bad.qcow2')
        damage(base, img, how)
        twin = img + '.twin'
        shutil.copy(img, twin)
        want = d.qsd_error([('blockdev-add', qcow2_node('x', twin))])
        before = file_hash(img)
        got = mon.cmd('blockdev-add', qcow2_node('x', img))
        if 'return' in got:
            mon.command('blockdev-del', node_name='x')
        if want is QSD_CRASHED:
            t.ok('error' in got, 'damaged (%s): refused (qemu-storage-daemon '
                 'crashed on it)' % what, got)
        elif what in STRICTER:
            # QEMU reads zeroes past the end of the file and accepts it
            t.ok(want is None and got.get('error', {}).get('desc') ==
                 STRICTER[what], 'damaged (%s): refused (QEMU accepts '
                 'it; its check reports the clusters)' % what, got)
        else:
            t.eq(got.get('error', {}).get('desc'), want,
                 'damaged (%s): refused with QEMU\'s message' % what)
        t.eq(file_hash(img), before, 'damaged (%s): file not written' % what)
    # all-ones table entries are valid and read as all dirty
    img = os.path.join(tmp, 'ones.qcow2')
    damage(base, img, lambda d_, e, o, t_: put(d_, t_, '>Q', 1))
    qbms, qsha = d.qsd_bitmaps(img)
    before = file_hash(img)
    mon.command('blockdev-add', qcow2_node('x', img, True))
    t.eq({b['name']: sha_of(mon, 'x', b['name'])
          for b in bitmaps_of(mon, 'x')}, qsha,
         'all-ones table entry read as QEMU reads it')
    t.eq(simple(bitmaps_of(mon, 'x')), simple(qbms),
         'read-only open: bitmaps as QEMU shows them')
    mon.command('blockdev-del', node_name='x')
    t.eq(file_hash(img), before, 'read-only open writes nothing')


def main():
    exe = sys.argv[1]
    t = Tap()
    tmp = tempfile.mkdtemp(prefix='vbk-bmp-')
    d = Daemons(exe, tmp)
    try:
        d.start()
        for test in (test_vbk_to_qemu, test_cycles, test_qemu_to_vbk,
                     test_crash, test_v2_and_stale, test_resize,
                     test_store_failure, test_damaged):
            try:
                test(t, d, tmp)
            except Exception as e:  # report and go on with the next one
                t.ok(False, '%s raised %r' % (test.__name__, e))
                d.stop()
                d.start()
        d.stop()
        t.ok('Sanitizer' not in d.stderr and 'CRITICAL' not in d.stderr,
             'vbackupd: no sanitizer report or critical warning', d.stderr)
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
