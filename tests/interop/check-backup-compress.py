#!/usr/bin/python3
"""check-backup-compress.py: compressed writes over QMP, against QEMU 7.2.

Usage: check-backup-compress.py VBACKUPD_EXE      (prints TAP)

vbackupd and qemu-storage-daemon 7.2 each get their own copies of the
same images and the same commands:

  - blockdev-backup compress=true to a raw node: the same error reply;
  - blockdev-backup compress=true sync=full to qcow2 targets of 64 KiB
    (deflate), 4 KiB (zstd) and 2 MiB clusters: the same reply and
    BLOCK_JOB_COMPLETED; both targets equal the source (qemu-img
    compare), are clean (check), hold the same number of compressed
    clusters and the same map (data / zero / compressed = no offset);
  - drive-backup compress=true to a new qcow2, and a transaction with a
    compressed blockdev-backup (to raw: refused alike; to qcow2: done);

and HMP `qemu-io NODE "write -c ..."` on vbackupd answers as QEMU's HMP
for what the real qemu-io does with the same command on a twin image:
nothing for a success, qemu-io's text for -EIO over an allocated
cluster, -EINVAL unaligned, the option conflicts, -ENOTSUP on a raw
node; the twins end up equal and mapped alike.
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


def run(*args):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE).stdout.decode()


TARGETS = (('t64', '-o', 'cluster_size=65536'),
           ('t4k', '-o', 'cluster_size=4096,compression_type=zstd'),
           ('t2m', '-o', 'cluster_size=2097152'))


def make_images(d):
    os.makedirs(d)
    rnd = os.path.join(d, 'rnd.bin')
    with open(rnd, 'wb') as f:
        f.write(os.urandom(256 * 1024))
    src = os.path.join(d, 'src.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', src, '4M')
    # compressible, incompressible, zeroes, a partial cluster, unallocated
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 7 0 1M',
        '-c', 'write -s %s 1M 256k' % rnd, '-c', 'write -z 2M 64k',
        '-c', 'write -P 3 0x3f0000 4k', src)
    for name, *opts in TARGETS:
        run('qemu-img', 'create', '-q', '-f', 'qcow2', *opts,
            os.path.join(d, name + '.qcow2'), '4M')
    for name in ('txn', 'h'):
        run('qemu-img', 'create', '-q', '-f', 'qcow2',
            os.path.join(d, name + '.qcow2'), '4M')
    run('qemu-img', 'create', '-q', '-f', 'raw', os.path.join(d, 'tgt.raw'),
        '4M')
    return rnd


class Side:
    def __init__(self, mon, d):
        self.mon = mon
        self.dir = d

    def path(self, name):
        return os.path.join(self.dir, name)

    def add(self, node, image, fmt='qcow2'):
        return self.mon.command('blockdev-add', {
            'driver': fmt, 'node-name': node,
            'file': {'driver': 'file', 'filename': self.path(image)}})

    def backup(self, job, target, execute='blockdev-backup', **kw):
        a = {'job-id': job, 'device': 'drive0', 'target': target,
             'sync': 'full', 'compress': True}
        a.update(kw)
        return self.mon.cmd(execute, a)

    def completed(self, job):
        ev = self.mon.wait_event('BLOCK_JOB_COMPLETED',
                                 lambda e: e['data']['device'] == job)
        self.mon.wait_event('JOB_STATUS_CHANGE',
                            lambda e: e['data']['id'] == job and
                            e['data']['status'] == 'null')
        return ev['data']


def image_facts(path):
    """What two equal backups share: the map's kinds of extent (data,
    zero, compressed = data without a host offset), merged where the
    kind goes on, since where plain clusters land on the host depends on
    the order parallel copies allocate them; the compressed count."""
    m = json.loads(run('qemu-img', 'map', '-U', '--output=json', path))
    shape = []
    for e in m:
        kind = (e['data'], e['zero'], 'offset' in e)
        if shape and shape[-1][2] == kind:
            shape[-1][1] += e['length']
        else:
            shape.append([e['start'], e['length'], kind])
    c = json.loads(run('qemu-img', 'check', '-U', '--output=json', path))
    return shape, c.get('compressed-clusters', 0), c['check-errors']


def judge(t, sides, image, desc):
    facts = []
    for side in sides:
        who = 'vbackupd' if side is sides[0] else 'qsd'
        r = subprocess.run(['qemu-img', 'compare', '-U', '-q',
                            side.path('src.qcow2'), side.path(image)])
        t.ok(r.returncode == 0, '%s: %s target == source' % (desc, who))
        facts.append(image_facts(side.path(image)))
    t.ok(facts[0][1] > 0, '%s: the target holds compressed clusters' % desc,
         facts[0])
    t.eq(facts[0][2], 0, '%s: qemu-img check finds no error' % desc)
    t.eq(facts[0], facts[1], '%s: same map and compressed-cluster count'
         % desc)


def backups(t, sides):
    r = [s.backup('j0', 'tgt-raw') for s in sides]
    t.eq(r[0], r[1], 'blockdev-backup compress=true to a raw node: refused')
    t.ok('error' in r[0] and r[0]['error']['desc'] ==
         'Compression is not supported for this drive ', 'the message',
         r[0])
    for name, *_ in TARGETS:
        r = [s.backup('c-' + name, name) for s in sides]
        t.eq(r[0], r[1], 'blockdev-backup compress=true to %s: accepted'
             % name)
        evs = [s.completed('c-' + name) for s in sides]
        t.eq(evs[0], evs[1], '%s: BLOCK_JOB_COMPLETED' % name)
        for s in sides:
            s.mon.command('blockdev-del', {'node-name': name})
        judge(t, sides, name + '.qcow2', 'compressed backup to ' + name)

    r = [s.backup('d0', s.path('drive.qcow2'), execute='drive-backup',
                  format='qcow2') for s in sides]
    t.eq(r[0], r[1], 'drive-backup compress=true to a new qcow2: accepted')
    evs = [s.completed('d0') for s in sides]
    t.eq(evs[0], evs[1], 'drive-backup: BLOCK_JOB_COMPLETED')
    judge(t, sides, 'drive.qcow2', 'compressed drive-backup')

    def action(target):
        return {'type': 'blockdev-backup',
                'data': {'job-id': 'x0', 'device': 'drive0',
                         'target': target, 'sync': 'full', 'compress': True}}
    r = [s.mon.cmd('transaction', {'actions': [action('tgt-raw')]})
         for s in sides]
    t.eq(r[0], r[1], 'transaction: a compressed backup to raw is refused')
    r = [s.mon.cmd('transaction', {'actions': [action('txn')]})
         for s in sides]
    t.eq(r[0], r[1], 'transaction: a compressed backup to qcow2')
    evs = [s.completed('x0') for s in sides]
    t.eq(evs[0], evs[1], 'transaction: BLOCK_JOB_COMPLETED')
    for s in sides:
        s.mon.command('blockdev-del', {'node-name': 'txn'})
    judge(t, sides, 'txn.qcow2', 'compressed backup in a transaction')


HMP_WRITES = [
    'write -c -P 0x11 0 64k',
    'write -c -P 0x22 0 64k',          # allocated: EIO
    'write -c 4k 64k',                 # unaligned: EINVAL
    'write -c 0 4k',                   # short, not the end: EINVAL
    'write -c -f 0 64k',
    'write -c -u 0 64k',
    'write -c -z -P 1 0 64k',
    'write -c -P 0x33 128k 192k',      # three clusters in one request
    'write -c -z 128k 64k',            # a zero write, not compressed
    'write -c -P 0x44 128k 64k',       # a zero cluster takes it
    'write -c -P 0x55 3968k 128k',     # past the end
    'write -c -q -P 0x66 1M 64k',
    'write -c 0 0',
]


def hmp_expected(cli_output):
    """What HMP returns for what the qemu-io tool printed: nothing for
    a success (QEMU's HMP qemu-io prints its report on the process's
    stdout, see commands-misc.c), the text of a failure."""
    if cli_output.startswith('wrote ') or cli_output == '':
        return ''
    return cli_output


def hmp_writes(t, ours, d):
    twin = os.path.join(d, 'twin.qcow2')
    shutil.copy(ours.path('h.qcow2'), twin)
    ours.add('h0', 'h.qcow2')
    for cmd in HMP_WRITES:
        got = ours.mon.hmp('qemu-io h0 "%s"' % cmd)
        want = subprocess.run(['qemu-io', '-f', 'qcow2', '-c', cmd, twin],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT).stdout.decode()
        t.eq(got.replace('\r\n', '\n'), hmp_expected(want),
             'HMP qemu-io "%s"' % cmd)
    ours.mon.command('blockdev-del', {'node-name': 'h0'})
    r = subprocess.run(['qemu-img', 'compare', '-q', ours.path('h.qcow2'),
                        twin])
    t.ok(r.returncode == 0, 'HMP write -c: the twins compare equal')
    t.eq(image_facts(ours.path('h.qcow2')), image_facts(twin),
         'HMP write -c: the same map and compressed-cluster count')
    got = ours.mon.hmp('qemu-io tgt-raw "write -c 0 64k"')
    want = subprocess.run(['qemu-io', '-f', 'raw', '-c', 'write -c 0 64k',
                           ours.path('tgt.raw')], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT).stdout.decode()
    t.eq(got.replace('\r\n', '\n'), hmp_expected(want),
         'HMP write -c on a raw node')


def main():
    exe = sys.argv[1]
    t = Tap('vbackupd', 'qemu')
    tmp = tempfile.mkdtemp(prefix='vbk-backup-compress-')
    procs = []
    try:
        make_images(os.path.join(tmp, 'v'))
        make_images(os.path.join(tmp, 'q'))
        for name in ('src.qcow2', 'rnd.bin'):  # the same random bytes
            shutil.copy(os.path.join(tmp, 'v', name),
                        os.path.join(tmp, 'q', name))
        vsock = os.path.join(tmp, 'v.sock')
        qsock = os.path.join(tmp, 'q.sock')
        procs.append(qmp.start_vbackupd(exe, vsock, os.path.join(tmp, 'st')))
        procs.append(qmp.start_qsd(qsock))
        sides = (Side(qmp.connect(vsock), os.path.join(tmp, 'v')),
                 Side(qmp.connect(qsock), os.path.join(tmp, 'q')))
        for s in sides:
            s.add('drive0', 'src.qcow2')
            s.add('tgt-raw', 'tgt.raw', 'raw')
            s.add('txn', 'txn.qcow2')
            for name, *_ in TARGETS:
                s.add(name, name + '.qcow2')
        backups(t, sides)
        hmp_writes(t, sides[0], tmp)
    finally:
        for p in procs:
            qmp.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
