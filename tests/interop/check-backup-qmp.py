#!/usr/bin/python3
"""check-backup-qmp.py: full then incremental backup over vbackupd's QMP.

Usage: check-backup-qmp.py VBACKUPD_EXE      (prints TAP)

The source is a qcow2 image made by qemu-img and written by qemu-io.
vbackupd opens it, backs it up in full (blockdev-backup sync=full), then a
bitmap records guest writes made through HMP qemu-io, and an incremental
backup (sync=incremental) writes only those clusters into a qcow2 whose
backing file is the full backup.  The real qemu-img then compares each
backup with a qemu-img convert of the source taken at the same point,
checks both images, and qemu-img map shows that the incremental image
holds exactly the dirty clusters.  Events, query-block-jobs and two
refusals are checked on the way.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402

MIB = 1024 * 1024
CL = 65536


def run(*argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    return p.returncode, p.stdout + p.stderr


def qemu_img(*args):
    rc, out = run('qemu-img', *args)
    if rc != 0:
        raise RuntimeError('qemu-img %s: %s' % (' '.join(args), out))
    return out


def add_image(mon, name, path):
    mon.command('blockdev-add', driver='qcow2', node_name=name,
                file={'driver': 'file', 'filename': path})


def backup(t, mon, **args):
    mon.command('blockdev-backup', **args)
    ev = mon.wait_event('BLOCK_JOB_COMPLETED',
                        lambda e: e['data']['device'] == args['job_id'])
    return ev['data']


def bitmap_info(mon, node, name):
    for n in mon.command('query-named-block-nodes'):
        if n['node-name'] == node:
            for bm in n.get('dirty-bitmaps', []):
                if bm.get('name') == name:
                    return bm
    return None


def main():
    exe = sys.argv[1]
    t = Tap()
    tmp = tempfile.mkdtemp(prefix='vbk-backup-qmp-')
    src = os.path.join(tmp, 'src.qcow2')
    full = os.path.join(tmp, 'full.qcow2')
    inc = os.path.join(tmp, 'inc.qcow2')
    ref_full = os.path.join(tmp, 'ref-full.qcow2')
    ref_inc = os.path.join(tmp, 'ref-inc.qcow2')
    sock = os.path.join(tmp, 'qmp.sock')
    proc = None
    try:
        qemu_img('create', '-q', '-f', 'qcow2', src, '8M')
        qemu_img('create', '-q', '-f', 'qcow2', full, '8M')
        rc, out = run('qemu-io', '-f', 'qcow2',
                      '-c', 'write -P 0x11 0 1M',
                      '-c', 'write -P 0x22 0x300000 0x18000',
                      '-c', 'write -z 0x500000 0x20000',
                      '-c', 'write -P 0x33 0x7f0000 0x10000', src)
        t.ok(rc == 0, 'qemu-io wrote the source', out)

        proc = qmp.start_vbackupd(exe, sock, os.path.join(tmp, 'state'))
        mon = qmp.connect(sock)
        add_image(mon, 'drive0', src)
        add_image(mon, 'tgt-full', full)

        # refusals, in QEMU's words and classes
        r = mon.cmd('blockdev-backup', job_id='x', device='drive0',
                    target='tgt-full', sync='incremental')
        t.eq(r.get('error'), {'class': 'GenericError', 'desc':
             "must provide a valid bitmap name for 'incremental' sync mode"},
             'incremental without a bitmap is refused')
        r = mon.cmd('block-job-cancel', device='nosuch')
        t.eq(r.get('error'), {'class': 'DeviceNotActive',
                              'desc': "Block job 'nosuch' not found"},
             'block-job-cancel of an unknown job')

        data = backup(t, mon, job_id='full0', device='drive0',
                      target='tgt-full', sync='full',
                      x_perf={'max-workers': 2})
        t.eq(data, {'device': 'full0', 'len': 8 * MIB, 'offset': 8 * MIB,
                    'speed': 0, 'type': 'backup'},
             'full backup: BLOCK_JOB_COMPLETED')
        t.eq(mon.command('query-block-jobs'), [], 'no block job left')
        drvs = [n['drv'] for n in mon.command('query-named-block-nodes')]
        t.ok('copy-before-write' not in drvs, 'the filter node is gone', drvs)

        # close everything to take the reference copy of the source
        mon.command('blockdev-del', node_name='tgt-full')
        mon.command('blockdev-del', node_name='drive0')
        qemu_img('convert', '-f', 'qcow2', '-O', 'qcow2', src, ref_full)
        rc, out = run('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2',
                      ref_full, full)
        t.ok(rc == 0, 'qemu-img compare: full backup == source', out)
        rc, out = run('qemu-img', 'check', full)
        t.ok(rc == 0, 'qemu-img check: full backup is clean', out)

        # the incremental chain: inc.qcow2 backed by the full backup
        qemu_img('create', '-q', '-f', 'qcow2', '-b', full, '-F', 'qcow2',
                 inc)
        add_image(mon, 'drive0', src)
        r = mon.cmd('block-dirty-bitmap-add', {'node': 'drive0',
                                               'name': 'bitmap0',
                                               'granularity': CL})
        t.ok('return' in r, 'block-dirty-bitmap-add', r)
        for cmdline in ('write -P 0x44 0x100000 0x10000',
                        'write -P 0x55 0x3f8000 0x10000',
                        'write -z 0x7f0000 0x10000'):
            mon.hmp('qemu-io drive0 "%s"' % cmdline)
        bm = bitmap_info(mon, 'drive0', 'bitmap0')
        t.eq(bm and bm['count'], 4 * CL, 'bitmap0 counts the 4 dirty clusters')
        add_image(mon, 'tgt-inc', inc)
        data = backup(t, mon, job_id='inc0', device='drive0',
                      target='tgt-inc', sync='incremental', bitmap='bitmap0',
                      filter_node_name='backup-top')
        t.eq(data, {'device': 'inc0', 'len': 4 * CL, 'offset': 4 * CL,
                    'speed': 0, 'type': 'backup'},
             'incremental backup: BLOCK_JOB_COMPLETED')
        bm = bitmap_info(mon, 'drive0', 'bitmap0')
        t.eq((bm['count'], bm['busy'], bm['recording']), (0, False, True),
             'bitmap0 after success: only the writes since the job started')
        mon.command('blockdev-del', node_name='tgt-inc')
        mon.command('blockdev-del', node_name='drive0')
        qemu_img('convert', '-f', 'qcow2', '-O', 'qcow2', src, ref_inc)
        rc, out = run('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2',
                      ref_inc, inc)
        t.ok(rc == 0, 'qemu-img compare: incremental chain == source', out)
        rc, out = run('qemu-img', 'check', inc)
        t.ok(rc == 0, 'qemu-img check: incremental image is clean', out)
        m = json.loads(qemu_img('map', '--output=json', inc))
        top = sum(e['length'] for e in m if e['depth'] == 0 and
                  (e['data'] or e['zero']))
        t.eq(top, 4 * CL, 'the incremental image holds the dirty clusters only')

        mon.close()
        t.eq(qmp.stop(proc), 0, 'vbackupd exits cleanly')
        proc = None
    finally:
        if proc is not None:
            qmp.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
