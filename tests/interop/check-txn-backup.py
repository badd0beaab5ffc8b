#!/usr/bin/python3
"""check-txn-backup.py: backups inside `transaction`, against QEMU.

Usage: check-txn-backup.py VBACKUPD_EXE      (prints TAP)

vbackupd and qemu-storage-daemon 7.2 each get their own copies of the
same images and the same transactions:

  - bitmap-add + blockdev-backup + abort: all-or-nothing (the error, no
    job left, no bitmap left, the same events);
  - completion-mode grouped with a bitmap action: refused;
  - grouped, the second backup's prepare fails: the first job is undone;
  - grouped, one job hits an injected read error (blkdebug) while the
    other still runs: the failing job completes with the error, the other
    one is cancelled, and both bitmaps keep their point in time (same
    counts, not busy);
  - individual mode: the failing job does not take the other one down;
  - a drive-backup refused in prepare undoes an earlier bitmap-add; bad
    members of a backup action give QAPI's messages;
  - grouped, both succeed; drive-backup as an action: the targets equal
    the source for the real qemu-img compare.

Replies must be equal byte for byte and the per-job event sequences
(timestamps and progress numbers aside) equal.  vbackupd alone also gets
guest writes (HMP qemu-io, which qemu-storage-daemon lacks) before the
grouped failure, so that its bitmaps are not empty when checked.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402

QSD = '/usr/bin/qemu-storage-daemon'
SIZE = 8 * 1024 * 1024


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


class Side:
    """One daemon with its own copies of the images."""

    def __init__(self, name, proc, mon, d):
        self.name = name
        self.proc = proc
        self.mon = mon
        self.dir = d

    def path(self, f):
        return os.path.join(self.dir, f)

    def raw(self, execute, **kwargs):
        """The reply's raw line: the byte-for-byte comparison."""
        self.mon.cmd(execute, **kwargs)
        return self.mon.last_raw

    def txn(self, actions, grouped=False):
        args = {'actions': actions}
        if grouped:
            args['properties'] = {'completion-mode': 'grouped'}
        return self.raw('transaction', **args)

    def bitmaps(self, node):
        for n in self.mon.command('query-named-block-nodes'):
            if n['node-name'] == node:
                return [(b['name'], b['count'], b['busy'], b['recording'])
                        for b in n.get('dirty-bitmaps', []) if 'name' in b]
        return None

    def jobs(self):
        return self.mon.command('query-jobs')

    def settle(self, timeout=30):
        """Wait until no job is left; return the events of the meantime
        per job: [(event, status-or-None)], progress numbers aside."""
        deadline = time.monotonic() + timeout
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        per_job = {}
        for ev in self.mon.events(wait=0.2):
            data = ev.get('data', {})
            job = data.get('id', data.get('device'))
            if ev['event'] == 'JOB_STATUS_CHANGE':
                item = ('JOB_STATUS_CHANGE', data['status'])
            else:
                item = (ev['event'], data.get('error', data.get('action')))
            per_job.setdefault(job, []).append(item)
        return per_job


def start_side(name, exe, d):
    sock = os.path.join(d, 'qmp.sock')
    if exe == QSD:
        proc = qmp.start_qsd(sock)
    else:
        proc = qmp.start_vbackupd(exe, sock, d)
    return Side(name, proc, qmp.connect(sock), d)


def prepare_images(d):
    src = os.path.join(d, 'src.qcow2')
    run('qemu-img', 'create', '-f', 'qcow2', src, str(SIZE))
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 192k',
        '-c', 'write -P 0x22 2M 64k', '-c', 'write -P 0x33 5M 128k', src)
    shutil.copy(src, os.path.join(d, 'src2.qcow2'))
    for t in ('t0', 't1', 't2'):
        run('qemu-img', 'create', '-f', 'qcow2', os.path.join(d, t + '.qcow2'),
            str(SIZE))


def add_nodes(s):
    s.mon.command('blockdev-add', driver='qcow2', node_name='drive0',
                  file={'driver': 'file', 'filename': s.path('src.qcow2')})
    # drive1: every data read fails (EIO)
    s.mon.command('blockdev-add', driver='qcow2', node_name='drive1', file={
        'driver': 'blkdebug',
        'image': {'driver': 'file', 'filename': s.path('src2.qcow2')},
        'inject-error': [{'event': 'read_aio', 'errno': 5,
                          'immediately': False}]})
    for t in ('t0', 't1', 't2'):
        s.mon.command('blockdev-add', driver='qcow2', node_name=t,
                      file={'driver': 'file',
                            'filename': s.path(t + '.qcow2')})


def backup(job, device, target, sync='full', **extra):
    data = {'job-id': job, 'device': device, 'target': target, 'sync': sync}
    data.update(extra)
    return {'type': 'blockdev-backup', 'data': data}


def scenario(tap, sides, desc, step):
    """Run @step on each side; compare what it returns."""
    out = [step(s) for s in sides]
    tap.eq(out[0], out[1], desc)
    return out[0]


def main():
    exe = sys.argv[1]
    tap = Tap('vbackupd', 'qemu')
    top = tempfile.mkdtemp(prefix='txn-backup.')
    sides = []
    try:
        for name, prog in (('vbackupd', exe), ('qsd', QSD)):
            d = os.path.join(top, name)
            os.mkdir(d)
            prepare_images(d)
            sides.append(start_side(name, prog, d))
        for s in sides:
            add_nodes(s)
        run_scenarios(tap, sides)
        for s in sides:
            tap.eq(qmp.stop(s.proc), 0, '%s exits cleanly' % s.name)
        compare_targets(tap, sides)
    finally:
        for s in sides:
            qmp.stop(s.proc)
        shutil.rmtree(top, ignore_errors=True)
    return tap.done()


def run_scenarios(tap, sides):
    bm_add = {'type': 'block-dirty-bitmap-add',
              'data': {'node': 'drive0', 'name': 'b0'}}

    def abort_action(s):
        reply = s.txn([bm_add, backup('j0', 'drive0', 't0'),
                       {'type': 'abort', 'data': {}}])
        return reply, s.settle(), s.bitmaps('drive0')
    got = scenario(tap, sides, 'add + backup + abort: all undone',
                   abort_action)
    tap.ok('Transaction aborted using Abort action' in got[0] and
           got[2] == [], 'abort: the error, and no bitmap left', got)

    scenario(tap, sides, 'grouped with a bitmap action is refused',
             lambda s: s.txn([bm_add, backup('j0', 'drive0', 't0')], True))

    def prepare_fails(s):
        reply = s.txn([backup('j1', 'drive0', 't0'),
                       backup('j2', 'drive0', 'nosuch')], True)
        return reply, s.settle()
    scenario(tap, sides, 'grouped: a failing prepare undoes the first job',
             prepare_fails)

    for s in sides:
        s.mon.command('block-dirty-bitmap-add', node='drive0', name='b0')
        s.mon.command('block-dirty-bitmap-add', node='drive1', name='b1')
        if s.name == 'vbackupd':
            for node, off in (('drive0', '0'), ('drive0', '3M'),
                              ('drive1', '1M')):
                s.mon.hmp('qemu-io %s "write -P 0x44 %s 64k"' % (node, off))

    before = [s.bitmaps('drive0') + s.bitmaps('drive1') for s in sides]
    tap.ok(len(before[0]) == 2 and all(b[1] > 0 for b in before[0]),
           'vbackupd: both bitmaps dirty before the grouped failure',
           before[0])

    def grouped_failure(s):
        reply = s.txn([
            backup('g0', 'drive0', 't1', 'full', bitmap='b0',
                   **{'bitmap-mode': 'on-success', 'speed': 65536}),
            backup('g1', 'drive1', 't2', 'full', bitmap='b1',
                   **{'bitmap-mode': 'on-success'})], True)
        return reply, s.settle()
    out = [grouped_failure(s) for s in sides]
    after = [s.bitmaps('drive0') + s.bitmaps('drive1') for s in sides]
    tap.eq(out[0][0], out[1][0], 'grouped failure: the same reply')
    ours = out[0][1]
    tap.eq(ours, out[1][1], 'grouped failure: the same events per job')
    tap.ok(('BLOCK_JOB_COMPLETED', 'Input/output error') in ours.get('g1', [])
           and ('BLOCK_JOB_CANCELLED', None) in ours.get('g0', []),
           'grouped failure: g1 fails with EIO, g0 is cancelled', ours)
    tap.eq(after[0], before[0],
           'grouped failure: both bitmaps keep their point in time')
    tap.eq(after[1], before[1], 'qemu: the bitmaps are unchanged as well')
    tap.eq([(b[0], b[2]) for b in after[0]], [(b[0], b[2]) for b in after[1]],
           'bitmap names and busy flags as QEMU')

    def individual_failure(s):
        reply = s.txn([backup('i0', 'drive0', 't1'),
                       backup('i1', 'drive1', 't2')])
        return reply, s.settle()
    got = scenario(tap, sides, 'individual: one job fails, the other '
                   'completes', individual_failure)
    tap.ok(('BLOCK_JOB_COMPLETED', None) in got[1].get('i0', []) and
           ('BLOCK_JOB_COMPLETED', 'Input/output error') in
           got[1].get('i1', []), 'individual: i0 completes, i1 fails', got)

    def drive_backup_refused(s):
        reply = s.txn([{'type': 'block-dirty-bitmap-add',
                        'data': {'node': 'drive0', 'name': 'b9'}},
                       {'type': 'drive-backup',
                        'data': {'job-id': 'd9', 'device': 'drive0',
                                 'target': s.path('d9.img'),
                                 'format': 'nosuchfmt', 'sync': 'full'}}])
        return reply, s.settle(), [b[0] for b in s.bitmaps('drive0')]
    scenario(tap, sides, 'drive-backup refused: the bitmap-add is undone',
             drive_backup_refused)

    def bad_member(s):
        return s.txn([backup('x0', 'drive0', 't0', 'sideways')]), \
            s.txn([backup('x0', 'drive0', 't0', 'full',
                          **{'x-perf': {'max-workers': 'x'}})])
    scenario(tap, sides, 'transaction: a bad backup member as QAPI says',
             bad_member)

    def grouped_success(s):
        reply = s.txn([backup('s0', 'drive0', 't0'),
                       {'type': 'drive-backup',
                        'data': {'job-id': 's1', 'device': 'drive0',
                                 'target': s.path('d1.qcow2'),
                                 'format': 'qcow2', 'sync': 'full'}}], True)
        return reply, s.settle()
    scenario(tap, sides, 'grouped: two backups (one drive-backup) succeed',
             grouped_success)


def compare_targets(tap, sides):
    """After the daemons stopped (QEMU keeps qcow2 metadata cached)."""
    for s in sides:
        for t in ('t0.qcow2', 'd1.qcow2'):
            rc = subprocess.call(['qemu-img', 'compare',
                                  s.path('src.qcow2'), s.path(t)],
                                 stdout=subprocess.DEVNULL)
            tap.eq(rc, 0, '%s: %s equals the source' % (s.name, t))


if __name__ == '__main__':
    sys.exit(main())
