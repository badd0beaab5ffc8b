#!/usr/bin/python3
"""vbackup-demo: vbackupd's main job, end to end, on its built-in default.

Starts vbackupd with a QMP monitor, creates a qcow2 disk through QMP
(blockdev-create jobs), opens it, writes and reads data with the qemu-io
command subset, closes the daemon cleanly and lets the real qemu-img judge
the image: `qemu-img check` must find no errors and no leaks, and
`qemu-img compare` must find it equal to a raw image that the real qemu-io
wrote with the same commands.

    plugin/vbackup-demo.py [--build DIR] [--keep]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'tests', 'interop'))
import qmp  # noqa: E402

WRITES = [
    ('0x11', '0', '64k'),
    ('0x22', '1M', '192k'),
    ('0x33', '0x7ff000', '8k'),      # crosses a cluster boundary
    ('0x44', '100M', '1M'),
]


def step(text):
    print('\n== ' + text, flush=True)


def show(label, value):
    print('   %-28s %s' % (label, value), flush=True)


def hmp_result(text):
    """QEMU's qemu-io prints to the daemon's stdout: "" means success."""
    return 'ok' if not text else text.strip().splitlines()[0]


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--build', default=os.path.join(here, '..', 'build'))
    ap.add_argument('--keep', action='store_true',
                    help='keep the work directory')
    args = ap.parse_args()
    exe = os.path.join(args.build, 'plugin', 'vbackupd')
    work = tempfile.mkdtemp(prefix='vbackup-demo-')
    sock = os.path.join(work, 'qmp.sock')
    img = os.path.join(work, 'disk0.qcow2')
    raw = os.path.join(work, 'shadow.raw')
    failures = 0

    step('start vbackupd --qmp %s' % sock)
    daemon = qmp.start_vbackupd(exe, sock, os.path.join(work, 'state'))
    mon = qmp.connect(sock)
    ver = mon.greeting['QMP']['version']
    show('greeting', '%s (QMP %d.%d.%d)' % (
        ver.get('package', ''), ver['qemu']['major'], ver['qemu']['minor'],
        ver['qemu']['micro']))

    step('blockdev-create: a 1 GiB qcow2 image, as two jobs')
    for job, options in (
            ('create-file', {'driver': 'file', 'filename': img, 'size': 0}),
            ('create-fmt', {'driver': 'qcow2', 'file': 'proto',
                            'size': 1 << 30, 'cluster-size': 65536})):
        if job == 'create-fmt':
            mon.command('blockdev-add', driver='file', filename=img,
                        node_name='proto')
        mon.command('blockdev-create', job_id=job, options=options)
        states = mon.job_statuses(job)
        show(job, ' -> '.join(states))
        mon.command('job-dismiss', id=job)
    mon.command('blockdev-del', node_name='proto')

    step('blockdev-add disk0 (qcow2 over file) and write with qemu-io')
    mon.command('blockdev-add', driver='qcow2', node_name='disk0',
                discard='unmap',
                file={'driver': 'file', 'filename': img})
    shutil.copyfile('/dev/null', raw)
    os.truncate(raw, 1 << 30)
    for pat, off, length in WRITES:
        cmd = 'write -P %s %s %s' % (pat, off, length)
        out = mon.hmp('qemu-io disk0 "%s"' % cmd)
        show(cmd, hmp_result(out))
        rc, text = run(['qemu-io', '-f', 'raw', '-c', cmd, raw])
        if rc:
            print(text)
            failures += 1
    out = mon.hmp('qemu-io disk0 "write -z 1088k 64k"')
    run(['qemu-io', '-f', 'raw', '-c', 'write -z 1088k 64k', raw])
    show('write -z 1088k 64k', hmp_result(out))
    out = mon.hmp('qemu-io disk0 "discard 100M 512k"')
    run(['qemu-io', '-f', 'raw', '-c', 'write -z 100M 512k', raw])
    show('discard 100M 512k', hmp_result(out))

    step('read back through vbackupd')
    for pat, off, length in (('0x11', '0', '64k'), ('0x22', '1M', '64k'),
                             ('0x00', '1088k', '64k'),
                             ('0x44', '100.5M', '512k')):
        out = mon.hmp('qemu-io disk0 "read -P %s %s %s"' % (pat, off, length))
        ok = 'Pattern verification failed' not in out
        failures += 0 if ok else 1
        show('read -P %s %s %s' % (pat, off, length),
             hmp_result(out) + ('' if ok else '  <-- MISMATCH'))
    out = mon.hmp('qemu-io disk0 "read -P 0x99 0 512"')
    show('read -P 0x99 0 512', hmp_result(out) + '  (expected: wrong pattern)')
    failures += 0 if 'Pattern verification failed' in out else 1

    step('query-named-block-nodes')
    for node in mon.command('query-named-block-nodes'):
        img_info = node.get('image', {})
        show(node['node-name'], '%s, virtual size %s, actual size %s' % (
            node['drv'], img_info.get('virtual-size'),
            img_info.get('actual-size')))

    step('stop vbackupd (SIGTERM: flush and close every image)')
    mon.close()
    rc = qmp.stop(daemon)
    show('exit status', rc)
    failures += 1 if rc else 0

    step('the real qemu-img judges the image')
    rc, text = run(['qemu-img', 'check', img])
    print('   ' + text.replace('\n', '\n   '))
    failures += 1 if rc else 0
    rc, text = run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw',
                    img, raw])
    show('qemu-img compare vs qemu-io', text)
    failures += 1 if rc else 0
    rc, text = run(['qemu-img', 'info', img])
    print('   ' + text.replace('\n', '\n   '))

    if args.keep:
        print('\nwork directory kept: ' + work)
    else:
        shutil.rmtree(work)
    print('\ndemo %s' % ('passed' if failures == 0 else
                         'FAILED (%d problems)' % failures))
    return 0 if failures == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
