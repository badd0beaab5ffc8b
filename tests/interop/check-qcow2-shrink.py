#!/usr/bin/python3
"""check-qcow2-shrink.py: shrinking qcow2 images, vbackupd vs QEMU 7.2.

Usage: check-qcow2-shrink.py VBACKUPD_EXE        (prints TAP)

Each case builds an image with the real qemu-img/qemu-io (data spread
over the image, persistent bitmaps dirtied by the writes, sometimes an
internal snapshot), copies it twice and has vbackupd and
qemu-storage-daemon do the same block_resize sequence on their copy.
Then, for each case:
  - the QMP replies and error texts are equal;
  - the bitmaps' x-debug-block-dirty-bitmap-sha256 and counts are equal
    after the shrink and after growing again;
  - the file node's length after the shrink is equal (the file was cut
    after the same last cluster), as are the L1 size and offset in the
    header;
  - `qemu-img check` finds no error and no leak in either image;
  - `qemu-img info --output=json` is equal apart from host file sizes;
  - `qemu-img compare` finds both images identical, and the surviving
    range equal to the image before the shrink (the snapshot too, when
    there is one).
"""

import os
import shutil
import signal
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from sidebyside import (Tap, Daemons, qemu_img, qemu_io, img_info,  # noqa
                        strip_sizes)

MiB = 1 << 20


def header_l1(img):
    with open(img, 'rb') as f:
        f.seek(36)
        return struct.unpack('>IQ', f.read(12))


def read_raw(img, tmp, snapshot=None):
    """The guest view of @img (or of its internal @snapshot) as bytes."""
    raw = os.path.join(tmp, 'raw.img')
    args = ['convert', '-U', '-O', 'raw']
    if snapshot:
        args += ['-l', 'snapshot.name=' + snapshot]
    rc, out = qemu_img(*(args + [img, raw]))
    if rc != 0:
        return out.encode()
    with open(raw, 'rb') as f:
        data = f.read()
    os.unlink(raw)
    return data


def make_image(path, spec):
    qemu_img('create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=%d,compat=%s' % (spec.get('cluster', 65536),
                                            spec.get('compat', '1.1')),
             path, str(spec['size']))
    for name, gran in spec.get('bitmaps', ()):
        qemu_img('bitmap', '--add', '-g', str(gran), path, name)
    qemu_io(path, *spec.get('writes', ()))
    if spec.get('snapshot'):
        qemu_img('snapshot', '-c', spec['snapshot'], path)
        qemu_io(path, *spec.get('writes_after', ()))


def norm(value, paths):
    # vbackup does not list internal snapshots in ImageInfo
    if isinstance(value, dict) and 'image' in value:
        value = dict(value, image={k: v for k, v in value['image'].items()
                                   if k != 'snapshots'})
    value = {k: v for k, v in value.items() if k != 'snapshots'}
    text = repr(strip_sizes(value))
    for p in paths:
        text = text.replace(p, 'IMG')
    return text


def node(reply, name):
    for n in reply.get('return', []):
        if n['node-name'] == name:
            return n
    return None


def blockdev_add(img, read_only=False):
    return {'driver': 'qcow2', 'node-name': 'drive0', 'read-only': read_only,
            'file': {'driver': 'file', 'node-name': 'file0',
                     'filename': img}}


def compare_bitmaps(t, d, spec, when):
    for name, _ in spec.get('bitmaps', ()):
        a = {'node': 'drive0', 'name': name}
        ours, theirs = d.cmd('x-debug-block-dirty-bitmap-sha256', a)
        t.eq(ours, theirs, '%s: %s: bitmap %s sha256' % (spec['name'], when,
                                                        name))
    ours, theirs = d.cmd('query-named-block-nodes', {})
    t.eq(node(ours, 'drive0').get('dirty-bitmaps'),
         node(theirs, 'drive0').get('dirty-bitmaps'),
         '%s: %s: dirty-bitmaps (counts)' % (spec['name'], when))


def run_resizes(t, d, spec, imgs):
    name = spec['name']
    ours, theirs = d.cmd('blockdev-add', blockdev_add(imgs[0]),
                         blockdev_add(imgs[1]))
    t.eq(ours, theirs, '%s: blockdev-add' % name)
    for i, size in enumerate(spec['resizes']):
        what = 'resize #%d to %d' % (i + 1, size)
        ours, theirs = d.cmd('block_resize', {'node-name': 'drive0',
                                              'size': size})
        t.eq(ours, theirs, '%s: %s: reply' % (name, what))
        compare_bitmaps(t, d, spec, what)
        ours, theirs = d.cmd('query-named-block-nodes', {})
        t.eq(norm(node(ours, 'drive0'), imgs),
             norm(node(theirs, 'drive0'), imgs),
             '%s: %s: query-named-block-nodes drive0' % (name, what))
        t.eq(node(ours, 'file0')['image']['virtual-size'],
             node(theirs, 'file0')['image']['virtual-size'],
             '%s: %s: length of the file (cut after the last cluster)'
             % (name, what))


def judge_images(t, spec, imgs, orig, tmp):
    name = spec['name']
    for who, img in zip(('vbackup', 'QEMU'), imgs):
        rc, out = qemu_img('check', img)
        t.ok(rc == 0 and 'No errors were found' in out,
             '%s: qemu-img check of the %s image: clean' % (name, who), out)
    t.eq(header_l1(imgs[0]), header_l1(imgs[1]),
         '%s: L1 size and offset in the header' % name)
    t.eq(norm(img_info(imgs[0]), imgs), norm(img_info(imgs[1]), imgs),
         '%s: qemu-img info --output=json' % name)
    rc, out = qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', imgs[0],
                       imgs[1])
    t.ok(rc == 0, '%s: qemu-img compare vbackup QEMU: identical' % name, out)
    keep = min(spec['resizes'])
    before, after = read_raw(orig, tmp), read_raw(imgs[0], tmp)
    t.ok(before[:keep] == after[:keep],
         '%s: the first %d bytes equal the image before the shrink'
         % (name, keep))
    # QEMU 7.2 keeps the cluster holding the new end, and growing again
    # does not zero it (no backing file): its tail shows the old data
    tail = -(-keep // spec.get('cluster', 65536)) * spec.get('cluster', 65536)
    t.ok(after[keep:tail] == before[keep:tail] and
         after[tail:] == bytes(len(after) - tail),
         '%s: what grew back reads as zeroes (but the tail of the end '
         'cluster)' % name)
    if spec.get('snapshot'):
        t.ok(read_raw(orig, tmp, spec['snapshot']) ==
             read_raw(imgs[0], tmp, spec['snapshot']),
             '%s: snapshot %s is untouched' % (name, spec['snapshot']))


def run_case(t, exe, tmp, spec):
    d_tmp = os.path.join(tmp, spec['name'])
    os.makedirs(os.path.join(d_tmp, 'v'))
    os.makedirs(os.path.join(d_tmp, 'q'))
    orig = os.path.join(d_tmp, 'orig.qcow2')
    make_image(orig, spec)
    imgs = [os.path.join(d_tmp, w, 'img.qcow2') for w in ('v', 'q')]
    for img in imgs:
        shutil.copyfile(orig, img)
    d = Daemons(exe, d_tmp, spec['name']).start()
    try:
        run_resizes(t, d, spec, imgs)
    finally:
        statuses = d.quit()
    t.eq(statuses[0], statuses[1], '%s: quit: status and stderr'
         % spec['name'])
    judge_images(t, spec, imgs, orig, d_tmp)


def kill_open(img, tmp):
    """Open @img read-write in qemu-storage-daemon and kill -9 it: its
    bitmaps stay in_use on disk."""
    sock = os.path.join(tmp, 'kill.sock')
    proc = qmp.start_qsd(sock)
    mon = qmp.connect(sock)
    mon.command('blockdev-add', blockdev_add(img))
    qmp.stop(proc, signal.SIGKILL)
    proc.stderr.close()
    mon.close()


def refusals(t, exe, tmp):
    """Resizes QEMU refuses: same texts, images unchanged."""
    cases = [
        ('v2 image with a snapshot',
         {'size': 64 * MiB, 'compat': '0.10', 'snapshot': 's0',
          'writes': ['write 0 1M']}, 32 * MiB, False, False),
        ('size not a multiple of 512',
         {'size': 64 * MiB}, 32 * MiB + 100, False, False),
        ('read-only node',
         {'size': 64 * MiB, 'writes': ['write 0 1M']}, 32 * MiB, True,
         False),
        ('inconsistent persistent bitmap',
         {'size': 64 * MiB, 'bitmaps': [('b0', 65536)],
          'writes': ['write 0 1M']}, 32 * MiB, False, True),
    ]
    for i, (what, spec, size, ro, kill) in enumerate(cases):
        d_tmp = os.path.join(tmp, 'refuse%d' % i)
        os.makedirs(d_tmp)
        orig = os.path.join(d_tmp, 'orig.qcow2')
        make_image(orig, spec)
        if kill:
            kill_open(orig, d_tmp)
        imgs = [os.path.join(d_tmp, w + '.qcow2') for w in ('v', 'q')]
        for img in imgs:
            shutil.copyfile(orig, img)
        d = Daemons(exe, d_tmp, 'r').start()
        try:
            d.cmd('blockdev-add', blockdev_add(imgs[0], ro),
                  blockdev_add(imgs[1], ro))
            ours, theirs = d.cmd('block_resize', {'node-name': 'drive0',
                                                  'size': size})
            t.ok('error' in theirs and ours == theirs,
                 'refused: %s: the same error' % what,
                 'ours:   %r\nQEMU:   %r' % (ours, theirs))
        finally:
            d.quit()
        t.eq(img_info(imgs[0])['virtual-size'], spec['size'],
             'refused: %s: size unchanged' % what)


CASES = [
    # one L2 table; the new end is not cluster aligned
    {'name': 'straddle', 'size': 64 * MiB,
     'bitmaps': [('b0', 65536), ('b1', 512 * 1024)],
     'writes': ['write -P 0x11 0 1M', 'write -P 0x22 20M 3M',
                'write -P 0x33 30M 64k', 'write -P 0x44 40M 1M',
                'write -P 0x55 63M 1M'],
     'resizes': [30 * MiB + 512, 64 * MiB]},
    # 4 KiB clusters: 2 MiB per L2 table, 8 MiB per refcount block, so
    # the shrink frees whole L2 tables and refcount blocks
    {'name': 'tables-and-refblocks', 'size': 64 * MiB, 'cluster': 4096,
     'bitmaps': [('small', 4096), ('big', 128 * 1024)],
     'writes': ['write -P 0x61 0 4M', 'write -P 0x62 40M 12M',
                'write -P 0x63 13M 8k', 'write -P 0x64 63M 1M'],
     'resizes': [13 * MiB + 4096 + 1024, 48 * MiB]},
    # the table holding the new end is missing (QEMU's discard makes one)
    {'name': 'missing-tables', 'size': 64 * MiB, 'cluster': 4096,
     'bitmaps': [('b0', 65536)],
     'writes': ['write -P 0x81 0 1M', 'write -P 0x82 40M 1M'],
     'resizes': [11 * MiB + 512, 24 * MiB]},
    # compressed clusters (several share a host cluster) beyond the end
    {'name': 'compressed', 'size': 64 * MiB,
     'bitmaps': [('b0', 65536)],
     'writes': ['write -c -P 0x91 0 256k', 'write -c -P 0x92 10M 512k',
                'write -c -P 0x93 30M 1M', 'write -P 0x94 31M 64k'],
     'resizes': [10 * MiB + 128 * 1024, 64 * MiB]},
    # down to nothing and back
    {'name': 'to-zero', 'size': 16 * MiB, 'cluster': 4096,
     'bitmaps': [('b0', 4096)],
     'writes': ['write -P 0xa1 0 1M', 'write -P 0xa2 9M 1M'],
     'resizes': [0, 8 * MiB]},
    # an internal snapshot shares the L2 tables and clusters
    {'name': 'snapshot', 'size': 64 * MiB, 'cluster': 4096,
     'bitmaps': [('b0', 65536)],
     'writes': ['write -P 0x71 0 2M', 'write -P 0x72 30M 4M'],
     'snapshot': 'snap0',
     'writes_after': ['write -P 0x73 1M 2M', 'write -P 0x74 31M 1M',
                      'write -P 0x75 50M 1M'],
     'resizes': [16 * MiB, 64 * MiB]},
]


def main():
    exe = sys.argv[1]
    t = Tap('vbackup', 'QEMU')
    tmp = tempfile.mkdtemp(prefix='vbk-shrink-')
    try:
        for spec in CASES:
            run_case(t, exe, tmp, spec)
        refusals(t, exe, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
