#!/usr/bin/python3
"""backup-bench-run.py: one run of the backup benchmark on one daemon.

Usage: backup-bench-run.py SIDE DIR RUN DIRECT BYTES N KIB [VBACKUPD]
  SIDE is "qsd" (qemu-storage-daemon) or "vbk" (vbackupd).

DIR holds src.qcow2 (a fresh copy of the random source), and empty
full.qcow2 and inc.qcow2 of the same size.  The run follows
/work/shared/bench/qsd-backup-bench.sh exactly in its timing points:

  FULL  bitmap bm0 added on src, blockdev-backup sync=full src -> full;
        t0 just before the QMP command that starts the backup, t1 at
        BLOCK_JOB_COMPLETED, t2 when blockdev-del of the target returned
        (closing the target flushes it).
  DIRTY N writes of KIB KiB at distinct cluster-aligned random offsets
        (random.Random(RUN), the same offsets and patterns as the qsd
        script).  qsd: one qemu-io process through an NBD export of src.
        vbk: vbackupd has no NBD server yet, so each write is a
        human-monitor-command "qemu-io src ..." on the source node.
  INCR  blockdev-backup sync=incremental bitmap=bm0 src -> inc, same
        timing points.

On qsd the bitmap is added in the same `transaction` as the backup (as
the peer script does); on vbackupd, whose transaction does not take
backup actions yet in every branch, block-dirty-bitmap-add runs just
before t0 (nothing writes in between, so the result is the same).

Prints one line of JSON: side, run, full_job, full_close, full_bytes,
dirty_s, dirty_count, inc_job, inc_close, inc_bytes.
"""

import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'interop'))
import qmp  # noqa: E402


def start_qsd(d, direct):
    argv = ['qemu-storage-daemon',
            '--blockdev', 'driver=file,node-name=src-file,filename=%s/'
            'src.qcow2,cache.direct=%s' % (d, direct),
            '--blockdev', 'driver=qcow2,node-name=src,file=src-file',
            '--nbd-server', 'addr.type=unix,addr.path=%s/nbd.sock' % d,
            '--export', 'type=nbd,id=exp0,node-name=src,name=src,'
            'writable=on',
            '--chardev', 'socket,id=qmp0,path=%s/qmp.sock,server=on,'
            'wait=off' % d,
            '--monitor', 'chardev=qmp0']
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(d + '/qmp.sock') and os.path.exists(d + '/nbd.sock'):
            break
        time.sleep(0.05)
    return proc


def start_vbk(d, direct, exe):
    os.makedirs(d + '/state', exist_ok=True)
    proc = qmp.start_vbackupd(exe, d + '/qmp.sock', d + '/state')
    mon = qmp.connect(d + '/qmp.sock', timeout=900)
    mon.command('blockdev-add', driver='qcow2', node_name='src',
                file={'driver': 'file', 'filename': d + '/src.qcow2',
                      'cache': {'direct': direct == 'on'}})
    return proc, mon


def wait_job(mon, job):
    ev = mon.wait_event('BLOCK_JOB_COMPLETED',
                        lambda e: e['data'].get('device') == job,
                        timeout=900)
    if ev['data'].get('error'):
        raise SystemExit('job %s: %s' % (job, ev['data']['error']))
    return ev['data']


def backup(mon, side, d, direct, job, before, **extra):
    mon.command('blockdev-add', driver='qcow2', node_name=job,
                file={'driver': 'file', 'filename': '%s/%s.qcow2' % (d, job),
                      'cache': {'direct': direct == 'on'}})
    act = {'type': 'blockdev-backup',
           'data': dict({'job-id': job, 'device': 'src', 'target': job},
                        **extra)}
    if side == 'qsd':
        t0 = time.monotonic()
        mon.command('transaction', actions=before + [act])
    else:
        for b in before:
            mon.command(b['type'], b['data'])
        t0 = time.monotonic()
        mon.command('blockdev-backup', act['data'])
    data = wait_job(mon, job)
    t1 = time.monotonic()
    mon.command('blockdev-del', node_name=job)
    t2 = time.monotonic()
    return t1 - t0, t2 - t0, data['offset']


def dirty(mon, side, d, offs, k):
    t0 = time.monotonic()
    if side == 'qsd':
        argv = ['qemu-io', '-f', 'raw']
        for o in offs:
            argv += ['-c', 'write -q -P 0x%02x %d %d' % ((o % 255) + 1,
                                                         o * k, k)]
        subprocess.run(argv + ['nbd+unix:///src?socket=%s/nbd.sock' % d],
                       check=True)
    else:
        for o in offs:
            out = mon.hmp('qemu-io src "write -q -P 0x%02x %d %d"'
                          % ((o % 255) + 1, o * k, k))
            if out.strip():
                raise SystemExit('qemu-io: %s' % out)
    return time.monotonic() - t0


def main():
    side, d, run, direct = sys.argv[1:5]
    size, n, k = (int(x) for x in sys.argv[5:8])
    k *= 1024
    if side == 'qsd':
        proc = start_qsd(d, direct)
        mon = qmp.connect(d + '/qmp.sock', timeout=900)
    else:
        proc, mon = start_vbk(d, direct, sys.argv[8])
    try:
        add = [{'type': 'block-dirty-bitmap-add',
                'data': {'node': 'src', 'name': 'bm0'}}]
        tf, tfd, nf = backup(mon, side, d, direct, 'full', add, sync='full')
        rng = random.Random(int(run))
        offs = sorted(rng.sample(range(size // k), n))
        tw = dirty(mon, side, d, offs, k)
        count = [b for nd in mon.command('query-named-block-nodes')
                 if nd['node-name'] == 'src'
                 for b in nd.get('dirty-bitmaps', [])
                 if b['name'] == 'bm0'][0]['count']
        ti, tid, ni = backup(mon, side, d, direct, 'inc', [],
                             sync='incremental', bitmap='bm0')
        mon.command('quit')
    finally:
        qmp.stop(proc, timeout=60)
    print(json.dumps({'side': side, 'run': int(run), 'direct': direct,
                      'full_job': tf, 'full_close': tfd, 'full_bytes': nf,
                      'dirty_s': tw, 'dirty_count': count,
                      'inc_job': ti, 'inc_close': tid, 'inc_bytes': ni}))


if __name__ == '__main__':
    main()
