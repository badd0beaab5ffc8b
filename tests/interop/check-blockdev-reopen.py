#!/usr/bin/python3
"""check-blockdev-reopen.py: blockdev-reopen, vbackupd vs QEMU 7.2.

Usage: check-blockdev-reopen.py VBACKUPD_EXE        (prints TAP)

vbackupd and qemu-storage-daemon each open a copy of the same qcow2
image (a persistent bitmap dirtied by qemu-io) and get the same
blockdev-reopen sequence: read-write -> read-only (parent only, then
the file child too) -> read-write (both in one list) -> read-only with
an inline file child -> read-write again, and a set of invalid reopens.
Judged at each step:
  - the replies (and error texts) are equal;
  - query-named-block-nodes is equal apart from host file sizes and
    paths (ro flags, format-specific bitmaps with their in-use flag);
  - `qemu-img info -U` of each image shows the bitmap directory on disk:
    going read-only stores the bitmaps (flags "auto" only), going
    read-write marks them "in-use" again — the same in both images;
  - a read-only bitmap refuses block-dirty-bitmap-clear with QEMU's
    words, and the bitmaps' sha256 stay equal;
and at the end `qemu-img check` is clean for both images.  Last, a
reopen read-only followed by kill -9 leaves both images clean with every
bitmap (one added since the open included) stored, not in-use.
"""

import os
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sidebyside import (Tap, Daemons, qemu_img, qemu_io,  # noqa: E402
                        img_info, strip_sizes)

MiB = 1 << 20


def on_disk(img):
    data = img_info(img).get('format-specific', {}).get('data', {})
    return data.get('bitmaps')


def first_difference(a, b, path=''):
    """Where the JSON values @a and @b first differ (for diagnostics)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), path + '.' + k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, '%s[%d]' % (path, i))
    return '%s: %r != %r' % (path, a, b)


def norm(value, paths):
    text = repr(strip_sizes(value))
    for p in paths:
        text = text.replace(p, 'IMG')
    return text


class Reopen:
    def __init__(self, t, d, imgs):
        self.t, self.d, self.imgs = t, d, imgs

    def opts(self, img, **kw):
        o = {'driver': 'qcow2', 'node-name': 'drive0', 'file': 'file0'}
        o.update(kw)
        if o.get('file') == 'inline':
            o['file'] = {'driver': 'file', 'filename': img}
        return o

    def both(self, name, make, desc):
        """Run @name with make(img) as arguments on both; compare."""
        ours, theirs = self.d.cmd(name, make(self.imgs[0]),
                                  make(self.imgs[1]))
        self.t.eq(ours, theirs, desc)
        return ours

    def reopen(self, desc, *elements):
        """blockdev-reopen with elements (img -> options) on both."""
        return self.both('blockdev-reopen',
                         lambda img: {'options': [e(img) for e in elements]},
                         'reopen %s: reply' % desc)

    def check_state(self, desc):
        ours, theirs = self.d.cmd('query-named-block-nodes', {})
        a, b = norm(ours, self.imgs), norm(theirs, self.imgs)
        self.t.ok(a == b, '%s: query-named-block-nodes' % desc,
                  first_difference(eval(a), eval(b)))
        self.t.eq(on_disk(self.imgs[0]), on_disk(self.imgs[1]),
                  '%s: bitmaps on disk (qemu-img info)' % desc)
        self.both('x-debug-block-dirty-bitmap-sha256',
                  lambda img: {'node': 'drive0', 'name': 'b0'},
                  '%s: sha256 of b0' % desc)
        return on_disk(self.imgs[0])


def flow(t, r):
    r.check_state('read-write after blockdev-add')
    t.eq(on_disk(r.imgs[0])[0]['flags'], ['in-use', 'auto'],
         'opened read-write: b0 is in-use on disk')

    r.reopen('drive0 read-only', lambda img: r.opts(img, **{'read-only':
                                                           True}))
    disk = r.check_state('drive0 read-only')
    t.eq(disk[0]['flags'], ['auto'], 'read-only: b0 stored, not in-use')
    r.both('block-dirty-bitmap-clear',
           lambda img: {'node': 'drive0', 'name': 'b0'},
           'read-only: clear refused (readonly bitmap)')

    r.reopen('file0 read-only', lambda img: {
        'driver': 'file', 'node-name': 'file0', 'filename': img,
        'read-only': True})
    r.check_state('file0 read-only')
    r.reopen('drive0 read-write over a read-only file0',
             lambda img: r.opts(img))

    # QEMU 7.2: a parent naming its child by reference keeps the child's
    # current options, whatever the list says for the child: refused in
    # either order while file0 is read-only
    r.reopen('file0 then drive0 read-write in one list',
             lambda img: {'driver': 'file', 'node-name': 'file0',
                          'filename': img},
             lambda img: r.opts(img))
    r.reopen('drive0 then file0 read-write in one list',
             lambda img: r.opts(img),
             lambda img: {'driver': 'file', 'node-name': 'file0',
                          'filename': img})
    # an inline child inherits read-write
    r.reopen('drive0 read-write with an inline file child',
             lambda img: r.opts(img, file='inline'))
    disk = r.check_state('both read-write again')
    t.eq(disk[0]['flags'], ['in-use', 'auto'],
         'read-write again: b0 in-use on disk')
    r.both('block-dirty-bitmap-add',
           lambda img: {'node': 'drive0', 'name': 'b1', 'persistent': True},
           'read-write: add b1')
    r.both('block-dirty-bitmap-clear',
           lambda img: {'node': 'drive0', 'name': 'b0'},
           'read-write: clear b0')

    r.reopen('read-only with an inline file child',
             lambda img: r.opts(img, file='inline', **{'read-only': True}))
    disk = r.check_state('inline read-only')
    t.eq([(b['name'], b['flags']) for b in disk],
         [('b0', ['auto']), ('b1', ['auto'])],
         'inline read-only: b0 and b1 stored, not in-use')
    r.reopen('read-write with an inline file child (as iotest 165)',
             lambda img: r.opts(img, file='inline', **{'read-only': False}))
    r.check_state('inline read-write')


def refusals(r):
    bad = [
        ('without node-name', lambda img: {'driver': 'qcow2',
                                           'file': 'file0'}),
        ('of an unknown node', lambda img: r.opts(img, **{
            'node-name': 'nosuch'})),
        ('changing the driver', lambda img: {
            'driver': 'raw', 'node-name': 'drive0', 'file': 'file0'}),
        ('with an unknown driver', lambda img: r.opts(img, driver='nosuch')),
        ('changing the file name', lambda img: r.opts(img, file={
            'driver': 'file', 'filename': img + '.other'})),
        ('renaming the inline child', lambda img: r.opts(img, file={
            'driver': 'file', 'filename': img, 'node-name': 'other'})),
        ('naming an unknown file child', lambda img: r.opts(img,
                                                            file='nosuch')),
        ('without the file member', lambda img: {'driver': 'qcow2',
                                                 'node-name': 'drive0'}),
        ('with an unknown member', lambda img: r.opts(img, bogus=1)),
        ('with read-only not a boolean', lambda img: r.opts(img, **{
            'read-only': 'yes'})),
        ('making file0 read-only under a read-write drive0',
         lambda img: {'driver': 'file', 'node-name': 'file0',
                      'filename': img, 'read-only': True}),
    ]
    for desc, make in bad:
        r.reopen(desc, make)
    r.both('blockdev-reopen', lambda img: {'options': 'drive0'},
           'reopen with options not a list')
    r.check_state('after the refused reopens')


def crash_after_reopen_ro(t, exe, tmp, orig):
    """Reopen read-only, then kill -9: what the reopen stored is all the
    image has, and it must be clean and complete (b0 and the new b2)."""
    imgs = [os.path.join(tmp, w + '-crash.qcow2') for w in ('v', 'q')]
    for img in imgs:
        shutil.copyfile(orig, img)
    d = Daemons(exe, tmp, 'crash').start()
    try:
        r = Reopen(t, d, imgs)
        r.both('blockdev-add', lambda img: {
            'driver': 'qcow2', 'node-name': 'drive0',
            'file': {'driver': 'file', 'node-name': 'file0',
                     'filename': img}}, 'crash: blockdev-add')
        r.both('block-dirty-bitmap-add',
               lambda img: {'node': 'drive0', 'name': 'b2',
                            'persistent': True, 'granularity': 131072},
               'crash: add b2')
        r.reopen('crash: read-only', lambda img: r.opts(img, **{
            'read-only': True}))
    finally:
        d.kill(signal.SIGKILL)
    t.eq(on_disk(imgs[0]), on_disk(imgs[1]),
         'crash: bitmaps on disk after kill -9')
    t.eq([(b['name'], b['flags']) for b in on_disk(imgs[0]) or []],
         [('b0', ['auto']), ('b2', ['auto'])],
         'crash: b0 and b2 stored by the reopen, not in-use')
    for who, img in zip(('vbackup', 'QEMU'), imgs):
        rc, out = qemu_img('check', img)
        t.ok(rc == 0, 'crash: qemu-img check of the %s image: clean' % who,
             out)


def main():
    t = Tap('vbackup', 'QEMU')
    tmp = tempfile.mkdtemp(prefix='vbk-reopen-')
    try:
        orig = os.path.join(tmp, 'orig.qcow2')
        qemu_img('create', '-q', '-f', 'qcow2', orig, str(64 * MiB))
        qemu_img('bitmap', '--add', orig, 'b0')
        qemu_io(orig, 'write 0 1M', 'write 40M 64k')
        imgs = [os.path.join(tmp, w + '.qcow2') for w in ('v', 'q')]
        for img in imgs:
            shutil.copyfile(orig, img)
        d = Daemons(sys.argv[1], tmp, 'reopen').start()
        try:
            r = Reopen(t, d, imgs)
            r.both('blockdev-add', lambda img: {
                'driver': 'qcow2', 'node-name': 'drive0',
                'file': {'driver': 'file', 'node-name': 'file0',
                         'filename': img}}, 'blockdev-add')
            flow(t, r)
            refusals(r)
        finally:
            statuses = d.quit()
        t.eq(statuses[0], statuses[1], 'quit: status and stderr')
        for who, img in zip(('vbackup', 'QEMU'), imgs):
            rc, out = qemu_img('check', img)
            t.ok(rc == 0, 'qemu-img check of the %s image: clean' % who, out)
        t.eq(on_disk(imgs[0]), on_disk(imgs[1]),
             'after quit: the same bitmaps on disk')
        crash_after_reopen_ro(t, sys.argv[1], tmp, orig)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
