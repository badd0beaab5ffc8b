#!/usr/bin/python3
"""qmp-smoke.py: vbackupd's QMP door against qemu-storage-daemon 7.2.

Usage: qmp-smoke.py VBACKUPD_EXE      (prints TAP)

Both daemons get the same commands side by side; replies must be equal
byte for byte where the two should agree (greeting, negotiation, error
classes and texts, job lists, node queries up to host-file sizes, the
qcow2 format-specific data of v2, zstd and bitmap-carrying images), and
the job events must come in the same order.  What QEMU's storage daemon
cannot do (HMP qemu-io) is checked against the real qemu-io and qemu-img
on the image afterwards.  Ends with SIGTERM and `quit` shutdowns.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp  # noqa: E402
from taplib import Tap  # noqa: E402

QSD = '/usr/bin/qemu-storage-daemon'


def norm_package(raw):
    return re.sub(r'"package": "[^"]*"', '"package": "X"', raw)


def norm_nodes(raw):
    """Host-file sizes and generated node names differ by design."""
    raw = re.sub(r'"#block\d+"', '"#blockN"', raw)
    return raw


def sizes_of(nodes):
    """(node-name, virtual-size) of the format nodes, for comparison."""
    return sorted((n['node-name'], n['image']['virtual-size'])
                  for n in nodes if n['drv'] != 'file')


def strip_file_sizes(value):
    """Zero the sizes of host files, which depend on the writer."""
    if isinstance(value, dict):
        out = {}
        for key, val in value.items():
            if key in ('actual-size',) or (
                    key == 'virtual-size' and value.get('format') == 'file'):
                out[key] = 0
            else:
                out[key] = strip_file_sizes(val)
        return out
    if isinstance(value, list):
        return [strip_file_sizes(v) for v in value]
    return value


def shape(value):
    """Key names and order of every object, values dropped."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


class Pair:
    """The same client session against both daemons."""

    def __init__(self, ours, theirs):
        self.ours = ours
        self.theirs = theirs

    def raw(self, text):
        self.ours.send_raw(text)
        self.theirs.send_raw(text)
        return self.ours.last_raw, self.theirs.last_raw

    def cmd(self, name, **args):
        return self.raw(json.dumps({'execute': name, 'arguments': args})
                        + '\n' if args else
                        json.dumps({'execute': name}) + '\n')


def test_greeting(t, vsock, qsock):
    """qsd serves one monitor client at a time: a session of its own."""
    ours = qmp.connect(vsock, negotiate=False)
    theirs = qmp.connect(qsock, negotiate=False)
    t.eq(norm_package(ours.greeting_raw), norm_package(theirs.greeting_raw),
         'greeting equals qsd 7.2 (package aside)')
    t.ok(ours.greeting['QMP']['version']['package'].startswith('vbackup'),
         'greeting names vbackup as the package')
    early = Pair(ours, theirs)
    a, b = early.cmd('query-jobs')
    t.eq(a, b, 'command before negotiation: CommandNotFound as qsd')
    a, b = early.raw('{"execute": "qmp_capabilities", "id": 5}\n')
    t.eq(a, b, 'qmp_capabilities with id: id echoed as qsd')
    a, b = early.raw('{"execute": "qmp_capabilities"}\n')
    t.eq(a, b, 'second qmp_capabilities refused as qsd')
    ours.close()
    theirs.close()


def test_errors(t, pair):
    cases = [
        '{"execute": "foo"}',
        '{"execute": "foo", "id": "x"}',
        '{"exec": "foo"}',
        '{"id": 1}',
        '[1]',
        '5',
        '{"execute": 5}',
        '{"execute": "query-jobs", "arguments": 5}',
        '{"execute": "query-jobs", "control": {}}',
        '{"execute": "query-jobs", "arguments": {"a": 1}}',
        '{"execute": "query-jobs", "id": {"a": [1, "x", true, null]}}',
        '{"execute": "query-jobs", "id": "\u00e9\U0001F600"}',
        '{"execute": "job-dismiss"}',
        '{"execute": "job-dismiss", "arguments": {"id": 1}}',
        '{"execute": "job-dismiss", "arguments": {"id": "nope"}}',
        '{"execute": "job-cancel", "arguments": {"id": "nope"}}',
        '{"execute": "query-named-block-nodes", "arguments": {"flat": 1}}',
        '{"execute": "block_resize", "arguments": {"size": 5}}',
        '{"execute": "block_resize", "arguments": {"node-name": "x", '
        '"device": "y", "size": 5}}',
        '{"execute": "block_resize", "arguments": {"node-name": "x"}}',
        '{"execute": "block_resize", "arguments": {"node-name": "x", '
        '"size": "big"}}',
        '{"execute": "blockdev-del", "arguments": {}}',
        '{"execute": "blockdev-del", "arguments": {"node-name": "zz"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "nope"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "file"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "file", '
        '"filename": 5}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "file", '
        '"filename": "/nonexistent"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", '
        '"node-name": "a"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "qcow2", '
        '"node-name": "a", "file": "nosuch"}}',
        '{"execute": "blockdev-create", "arguments": {"options": {}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"size": 0}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "file", "size": 0}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "file", "filename": "/x", "size": 1.5}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "file", "filename": "/x", "size": 0, '
        '"bogus": 1}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "raw", "size": 0}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "qcow2", "file": 5, "size": 0}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "qcow2", "file": "f", "size": 0, '
        '"version": "v4"}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "j", '
        '"options": {"driver": "qcow2", "file": "f", "size": 0, '
        '"refcount-bits": "a"}}}',
        '{"execute": "blockdev-create", "arguments": {"job-id": "1x", '
        '"options": {"driver": "file", "filename": "/x", "size": 0}}}',
    ]
    for text in cases:
        a, b = pair.raw(text + '\n')
        t.eq(a, b, 'same reply as qsd to %s' % text)

    # messages spread over lines, or several on one line
    a, b = pair.raw('{"execute":\n "query-jobs",\n "id": 7}')
    t.eq(a, b, 'a command spanning lines')
    ours, theirs = pair.ours, pair.theirs
    for mon in (ours, theirs):
        mon.sock.sendall(b'{"execute": "query-jobs", "id": 1} '
                         b'{"execute": "query-jobs", "id": 2}\n')
    t.eq([ours._reply()['id'], ours._reply()['id']],
         [theirs._reply()['id'], theirs._reply()['id']],
         'two commands on one line, answered in order')
    a, b = pair.raw('{"execute": "query-jobs" "x"}\n')
    ja, jb = json.loads(a), json.loads(b)
    t.ok(ja['error']['class'] == jb['error']['class'] == 'GenericError' and
         ja['error']['desc'].startswith('JSON parse error, '),
         'malformed JSON: GenericError "JSON parse error, ..."', a)


def run_create(t, pair, job_id, options, desc):
    """blockdev-create on both; compare replies and the event sequences."""
    a, b = pair.cmd('blockdev-create', **{'job-id': job_id,
                                          'options': options})
    t.eq(a, b, '%s: blockdev-create reply as qsd' % desc)
    ev_a = pair.ours.job_statuses(job_id)
    ev_b = pair.theirs.job_statuses(job_id)
    t.eq(ev_a, ev_b, '%s: JOB_STATUS_CHANGE sequence as qsd (%s)'
         % (desc, ' '.join(ev_b)))
    a, b = pair.cmd('query-jobs')
    t.eq(a, b, '%s: query-jobs identical to qsd' % desc)
    a, b = pair.cmd('job-dismiss', id=job_id)
    t.eq(a, b, '%s: job-dismiss as qsd' % desc)
    t.eq(pair.ours.job_statuses(job_id, 'null'),
         pair.theirs.job_statuses(job_id, 'null'),
         '%s: dismiss emits null as qsd' % desc)


def test_jobs_and_nodes(t, pair, dirs):
    img = {k: os.path.join(d, 'disk.qcow2') for k, d in dirs.items()}
    base = {k: os.path.join(d, 'base.qcow2') for k, d in dirs.items()}

    def both(_cmd, **args):
        """Same command, per-daemon paths substituted."""
        out = []
        for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
            text = json.dumps({'execute': _cmd, 'arguments': args})
            text = text.replace('@IMG@', img[side]).replace('@BASE@',
                                                            base[side])
            mon.send_raw(text + '\n')
            out.append(mon.last_raw.replace(img[side], '@IMG@')
                       .replace(base[side], '@BASE@'))
        return out

    # file creation through a job, on both; paths differ per side
    for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
        mon.command('blockdev-create', {'job-id': 'cf', 'options': {
            'driver': 'file', 'filename': img[side], 'size': 0}})
    t.eq(pair.ours.job_statuses('cf'), pair.theirs.job_statuses('cf'),
         'file create: events as qsd')
    a, b = pair.cmd('query-jobs')
    t.eq(a, b, 'file create: query-jobs as qsd')
    pair.cmd('job-dismiss', id='cf')
    a, b = both('blockdev-add', driver='file', filename='@IMG@',
                **{'node-name': 'disk0-file'})
    t.eq(a, b, 'blockdev-add file node')

    # a failing creation: error text in query-jobs
    run_create(t, pair, 'bad', {'driver': 'qcow2', 'file': 'disk0-file',
                                'size': 1 << 20, 'cluster-size': 1000},
               'qcow2 cluster-size 1000 (fails)')
    run_create(t, pair, 'nonode', {'driver': 'qcow2', 'file': 'nonode',
                                   'size': 1 << 20}, 'qcow2 on no node')
    run_create(t, pair, 'mk', {'driver': 'qcow2', 'file': 'disk0-file',
                               'size': 64 << 20}, 'qcow2 64M')

    a, b = both('blockdev-add', driver='qcow2', file='disk0-file',
                **{'node-name': 'drive0'})
    t.eq(a, b, 'blockdev-add qcow2 with its file by reference')
    a, b = both('blockdev-add', driver='qcow2', file='disk0-file',
                **{'node-name': 'drive0'})
    t.eq(a, b, 'duplicate node-name refused as qsd')
    a, b = both('blockdev-del', **{'node-name': 'disk0-file'})
    t.eq(a, b, 'deleting a node in use refused as qsd')

    for flat in (False, True):
        a, b = both('query-named-block-nodes', flat=flat)
        ja, jb = json.loads(a), json.loads(b)
        t.eq(shape(ja), shape(jb),
             'query-named-block-nodes flat=%s: keys and order as qsd' % flat)
        t.eq(strip_file_sizes(ja), strip_file_sizes(jb),
             'query-named-block-nodes flat=%s: values as qsd '
             '(host file sizes aside)' % flat)

    test_bitmaps(t, pair, both)

    # null-co and raw, the raw one referring to the null-co node (default
    # size: with options QEMU names nodes "json:{...}", vbackup does not)
    a, b = both('blockdev-add', driver='null-co', **{'node-name': 'null0'})
    t.eq(a, b, 'blockdev-add null-co')
    a, b = both('blockdev-add', driver='raw', file='null0',
                **{'node-name': 'raw0'})
    t.eq(a, b, 'blockdev-add raw over null-co by reference')
    a, b = both('query-named-block-nodes')
    pick = [[n for n in json.loads(x)['return']
             if n['node-name'] in ('raw0', 'null0')] for x in (a, b)]
    t.eq(shape(pick[0]), shape(pick[1]),
         'raw and null-co nodes: keys and order as qsd')
    t.eq(pick[0], pick[1], 'raw and null-co nodes: values as qsd')
    for name in ('raw0', 'null0'):
        a, b = both('blockdev-del', **{'node-name': name})
        t.eq(a, b, 'blockdev-del %s' % name)

    a, b = both('block_resize', **{'node-name': 'drive0',
                                   'size': 128 << 20})
    t.eq(a, b, 'block_resize reply as qsd')
    a, b = both('query-named-block-nodes', flat=True)
    t.eq(sizes_of(json.loads(a)['return']), sizes_of(json.loads(b)['return']),
         'virtual size after block_resize as qsd')

    # a backing chain: base image, then an overlay naming it
    for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
        mon.command('blockdev-create', {'job-id': 'bf', 'options': {
            'driver': 'file', 'filename': base[side], 'size': 0}})
        mon.job_statuses('bf')
        mon.command('job-dismiss', id='bf')
        mon.command('blockdev-add', {'driver': 'file',
                                     'filename': base[side],
                                     'node-name': 'base-file'})
        mon.command('blockdev-create', {'job-id': 'bq', 'options': {
            'driver': 'qcow2', 'file': 'base-file', 'size': 1 << 20,
            'version': 'v2', 'cluster-size': 4096}})
        mon.job_statuses('bq')
        mon.command('job-dismiss', id='bq')
        mon.command('blockdev-del', {'node-name': 'base-file'})
    return img, base


FORMAT_SPECIFIC_IMAGES = [
    # (name, qemu-img create -o, bitmaps to add: (name, extra args))
    ('fsbm', 'lazy_refcounts=on,refcount_bits=8',
     [('b0', []), ('b1', ['-g', '131072', '--disable'])]),
    ('fsv2', 'compat=0.10', []),
    ('fszstd', 'compression_type=zstd,cluster_size=4096', [('z', [])]),
]


def test_format_specific(t, pair, dirs):
    """format-specific qcow2 data (compat, compression-type, bitmaps with
    their flags, refcount-bits, ...): members, order and values as qsd's
    query-named-block-nodes, and the same in our query-block."""
    for name, opts, bitmaps in FORMAT_SPECIFIC_IMAGES:
        imgs = {side: os.path.join(d, name + '.qcow2')
                for side, d in dirs.items()}
        src = imgs['ours'] + '.src'
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
                        opts, src, '64M'], check=True)
        for bm, extra in bitmaps:
            subprocess.run(['qemu-img', 'bitmap', '--add'] + extra +
                           [src, bm], check=True)
        for img in imgs.values():
            shutil.copyfile(src, img)
        nodes = []
        for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
            mon.command('blockdev-add', {
                'driver': 'qcow2', 'node-name': name,
                'file': {'driver': 'file', 'filename': imgs[side]}})
            if bitmaps:  # added, not stored yet: not in the directory
                mon.command('block-dirty-bitmap-add', {
                    'node': name, 'name': 'fresh', 'persistent': True})
            mon.send_raw(json.dumps(
                {'execute': 'query-named-block-nodes'}) + '\n')
            text = mon.last_raw.replace(imgs[side], '@IMG@')
            nodes.append([n for n in json.loads(text)['return']
                          if n['node-name'] == name][0])
        spec = [n['image']['format-specific'] for n in nodes]
        t.eq(shape(spec[0]), shape(spec[1]),
             '%s: format-specific members and order as qsd' % name)
        t.eq(spec[0], spec[1], '%s: format-specific values as qsd' % name)
        t.eq(strip_file_sizes(nodes[0]), strip_file_sizes(nodes[1]),
             '%s: the whole node as qsd (host file sizes aside)' % name)
        ours = [d['inserted'] for d in pair.ours.command('query-block')
                if d['device'] == name][0]
        t.eq(ours['image'].get('format-specific'), spec[1],
             '%s: query-block image format-specific as qsd\'s node' % name)
        for mon in (pair.ours, pair.theirs):
            mon.command('blockdev-del', {'node-name': name})


def test_bitmaps(t, pair, both):
    """Dirty-bitmap commands on drive0, side by side (non-persistent)."""
    steps = [
        ('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'b0'}),
        ('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'b1',
                                    'granularity': 131072,
                                    'disabled': True}),
        ('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'b0'}),
        ('block-dirty-bitmap-add', {'node': 'drive0', 'name': ''}),
        ('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'b2',
                                    'granularity': 1000}),
        ('block-dirty-bitmap-add', {'node': 'nope', 'name': 'b2'}),
        ('block-dirty-bitmap-add', {'node': 'drive0'}),
        ('query-named-block-nodes', {'flat': True}),
        ('block-dirty-bitmap-enable', {'node': 'drive0', 'name': 'b1'}),
        ('block-dirty-bitmap-disable', {'node': 'drive0', 'name': 'b1'}),
        ('block-dirty-bitmap-clear', {'node': 'drive0', 'name': 'b0'}),
        ('block-dirty-bitmap-clear', {'node': 'drive0', 'name': 'nosuch'}),
        ('block-dirty-bitmap-merge', {'node': 'drive0', 'target': 'b0',
                                      'bitmaps': ['b1', {'node': 'drive0',
                                                         'name': 'b1'}]}),
        ('block-dirty-bitmap-merge', {'node': 'drive0', 'target': 'b0',
                                      'bitmaps': ['zz']}),
        ('block-dirty-bitmap-merge', {'node': 'drive0', 'target': 'b0',
                                      'bitmaps': [5]}),
        ('block-dirty-bitmap-merge', {'node': 'drive0', 'target': 'b0',
                                      'bitmaps': 'b1'}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'drive0',
                                               'name': 'b0'}),
        ('block-dirty-bitmap-remove', {'node': 'drive0', 'name': 'b1'}),
        ('block-dirty-bitmap-remove', {'node': 'drive0', 'name': 'b1'}),
        ('block-dirty-bitmap-remove', {'node': 'nope', 'name': 'b0'}),
    ]
    for name, args in steps:
        a, b = both(name, **args)
        if name == 'query-named-block-nodes':
            pick = [[n.get('dirty-bitmaps') for n in json.loads(x)['return']
                     if n['node-name'] == 'drive0'] for x in (a, b)]
            t.eq(pick[0], pick[1], 'dirty-bitmaps in the node query as qsd')
        else:
            t.eq(a, b, '%s %s: as qsd' % (name, json.dumps(args)))
    # transactions: all or nothing
    act = lambda t, **d: {'type': t, 'data': d}  # noqa: E731
    steps = [
        [],
        [act('block-dirty-bitmap-add', node='drive0', name='t0'),
         act('block-dirty-bitmap-add', node='drive0', name='t1',
             granularity=131072)],
        [act('block-dirty-bitmap-add', node='drive0', name='t2'),
         act('abort')],
        [act('block-dirty-bitmap-clear', node='drive0', name='t0'),
         act('block-dirty-bitmap-add', node='drive0', name='t0')],
        [act('block-dirty-bitmap-disable', node='drive0', name='t1'),
         act('block-dirty-bitmap-merge', node='drive0', target='t0',
             bitmaps=['t1']),
         act('block-dirty-bitmap-remove', node='drive0', name='t1')],
        [{'type': 'nope', 'data': {}}],
        [{'type': 'block-dirty-bitmap-add'}],
        [{'data': {}}],
        [act('block-dirty-bitmap-add', node='drive0')],
        [{'type': 'abort'}],
        [act('block-dirty-bitmap-remove', node='drive0', name='t0'),
         act('block-dirty-bitmap-add', node='drive0', name='t0')],
    ]
    for actions in steps:
        a, b = both('transaction', actions=actions)
        t.eq(a, b, 'transaction %s: as qsd' % json.dumps(actions))
    for args in ({'actions': [act('block-dirty-bitmap-add', node='drive0',
                                  name='t3')],
                  'properties': {'completion-mode': 'grouped'}},
                 {'actions': 5}, {},
                 {'actions': [], 'properties': {'completion-mode': 'x'}}):
        a, b = both('transaction', **args)
        t.eq(a, b, 'transaction %s: as qsd' % json.dumps(args))
    a, b = both('query-named-block-nodes', flat=True)
    pick = [[n.get('dirty-bitmaps') for n in json.loads(x)['return']
             if n['node-name'] == 'drive0'] for x in (a, b)]
    t.eq(pick[0], pick[1], 'bitmaps after the transactions as qsd')
    both('block-dirty-bitmap-remove', node='drive0', name='t0')

    # writes mark b0 (qsd has no HMP: ours only)
    mon = pair.ours
    mon.hmp('qemu-io drive0 "write -P 0x33 0 64k"')
    mon.hmp('qemu-io drive0 "write -P 0x33 1M 64k"')
    nodes = mon.command('query-named-block-nodes', flat=True)
    bms = [n['dirty-bitmaps'] for n in nodes if n['node-name'] == 'drive0']
    t.eq(bms, [[{'name': 'b0', 'recording': True, 'persistent': False,
                 'busy': False, 'granularity': 65536, 'count': 131072}]],
         'qemu-io writes through QMP mark the bitmap (count in bytes)')
    sha_before = mon.command('x-debug-block-dirty-bitmap-sha256',
                             node='drive0', name='b0')
    r = mon.cmd('transaction', actions=[
        act('block-dirty-bitmap-clear', node='drive0', name='b0'),
        act('abort')])
    t.eq(r.get('error', {}).get('desc'),
         'Transaction aborted using Abort action', 'abort action refuses')
    t.eq(mon.command('x-debug-block-dirty-bitmap-sha256', node='drive0',
                     name='b0'), sha_before,
         'an aborted transaction restores a cleared bitmap')
    mon.command('transaction', actions=[
        act('block-dirty-bitmap-clear', node='drive0', name='b0')])
    nodes = mon.command('query-named-block-nodes', flat=True)
    t.eq([n['dirty-bitmaps'][0]['count'] for n in nodes
          if n['node-name'] == 'drive0'], [0],
         'a committed transaction clears it')
    mon.command('block-dirty-bitmap-remove', node='drive0', name='b0')
    pair.theirs.command('block-dirty-bitmap-remove', node='drive0',
                        name='b0')


def test_inline_and_chain(t, pair, dirs, base):
    ov = {k: os.path.join(d, 'overlay.qcow2') for k, d in dirs.items()}
    for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
        mon.command('blockdev-create', {'job-id': 'of', 'options': {
            'driver': 'file', 'filename': ov[side], 'size': 0}})
        mon.job_statuses('of')
        mon.command('job-dismiss', id='of')
        mon.command('blockdev-add', {'driver': 'file', 'filename': ov[side],
                                     'node-name': 'ov-file'})
        mon.command('blockdev-create', {'job-id': 'oq', 'options': {
            'driver': 'qcow2', 'file': 'ov-file', 'size': 1 << 20,
            'backing-file': base[side], 'backing-fmt': 'qcow2',
            'lazy-refcounts': True, 'refcount-bits': 8}})
        mon.job_statuses('oq')
        mon.command('job-dismiss', id='oq')
        mon.command('blockdev-del', {'node-name': 'ov-file'})

    replies = []
    for side, mon in (('ours', pair.ours), ('theirs', pair.theirs)):
        mon.command('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'ov',
            'file': {'driver': 'file', 'filename': ov[side],
                     'cache': {'direct': True}}})
        raw = mon.send_raw('{"execute": "query-named-block-nodes"}\n')
        raw = mon.last_raw.replace(ov[side], '@OV@').replace(base[side],
                                                             '@BASE@')
        nodes = json.loads(norm_nodes(raw))['return']
        replies.append([n for n in nodes
                        if n['file'] in ('@OV@', '@BASE@')])
    a, b = replies
    t.eq(shape(a), shape(b),
         'inline file child + backing chain: keys and order as qsd')
    t.eq(strip_file_sizes(a), strip_file_sizes(b),
         'inline file child, cache.direct, v2 backing with format: '
         'values as qsd')
    for mon in (pair.ours, pair.theirs):
        mon.command('blockdev-del', {'node-name': 'ov'})
    return ov


def test_qemu_io(t, mon):
    """HMP qemu-io (qsd has no HMP: checked against qemu-io later)."""
    def io(cmd):
        return mon.hmp('qemu-io drive0 "%s"' % cmd)

    t.eq(io('write -P0x49 0 0x10000'), '', 'qemu-io write -P (hex) -> ""')
    t.eq(io('write -P 0x6c 1M 64k'), '', 'qemu-io write with k/M sizes')
    t.eq(io('write -P 0x6f 0x2000000 65536'), '', 'qemu-io write at 32M')
    t.eq(io('read -P 0x49 0 64k'), '', 'qemu-io read -P matching -> ""')
    t.eq(io('read -P 0x48 0 64k').split('\r\n')[0],
         'Pattern verification failed at offset 0, 65536 bytes',
         'qemu-io read -P mismatch: qemu-io\'s message')
    t.eq(io('write -z 2M 64k'), '', 'qemu-io write -z')
    t.eq(io('read -P 0 2M 64k'), '', 'zeroes read back as zeroes')
    t.eq(io('flush'), '', 'qemu-io flush')
    t.eq(io('write 200M 4k'), 'write failed: Input/output error\r\n',
         'write past the end: EIO as qemu-io')
    t.eq(io('read 1x 4k'),
         'Parsing error: non-numeric argument, or extraneous/unrecognized '
         'suffix -- 1x\r\n', 'bad number: qemu-io\'s parsing error')
    t.eq(io('write -P 300 0 4'), '300 is not a valid pattern byte\r\n',
         'bad pattern byte')
    t.eq(io('frob'), 'command "frob" not found\r\n', 'unknown command')
    t.eq(mon.hmp('qemu-io nosuch "flush"'),
         "Error: Cannot find device='' nor node-name='nosuch'\r\n",
         'unknown device')
    # discard needs discard=unmap, as in QEMU
    mon.command('blockdev-add', {'driver': 'qcow2', 'node-name': 'unmap0',
                                 'discard': 'unmap', 'file': {
                                     'driver': 'file', 'discard': 'unmap',
                                     'filename': mon.img}})
    t.eq(mon.hmp('qemu-io unmap0 "discard 32M 64k"'), '',
         'qemu-io discard on a discard=unmap node')
    t.eq(mon.hmp('qemu-io unmap0 "read -P 0 32M 64k"'), '',
         'discarded range reads as zeroes')
    mon.command('blockdev-del', {'node-name': 'unmap0'})


def test_two_clients(t, exe_sock, img_dir):
    c1 = qmp.connect(exe_sock)
    c2 = qmp.connect(exe_sock)
    c3 = qmp.connect(exe_sock, negotiate=False)
    path = os.path.join(img_dir, 'two.raw')
    c1.command('blockdev-create', {'job-id': 'two', 'options': {
        'driver': 'file', 'filename': path, 'size': 1 << 20}})
    s1 = c1.job_statuses('two')
    s2 = c2.job_statuses('two')
    t.eq(s2, s1, 'a second client gets the same job events')
    ev = c2.events(0.2)
    c2.command('job-dismiss', id='two')
    ev = c1.wait_event('JOB_STATUS_CHANGE',
                       lambda e: e['data']['status'] == 'null')
    t.ok(isinstance(ev['timestamp']['seconds'], int) and
         isinstance(ev['timestamp']['microseconds'], int) and
         abs(ev['timestamp']['seconds'] - time.time()) < 60 and
         0 <= ev['timestamp']['microseconds'] < 1000000,
         'event timestamps are seconds/microseconds of now', ev)
    t.eq(c3.events(0.3), [], 'a client still negotiating gets no events')
    for c in (c1, c2, c3):
        c.close()


def test_options(t, exe, tmp):
    r = subprocess.run([exe, '--version'], capture_output=True, text=True)
    t.ok(r.returncode == 0 and r.stdout.startswith('vbackupd '),
         '--version', r)
    r = subprocess.run([exe, '--bogus'], capture_output=True, text=True)
    t.ok(r.returncode == 1 and 'bogus' in r.stderr, 'bad option: exit 1', r)
    r = subprocess.run([exe, '--socket', '/tmp/x'], capture_output=True,
                       text=True)
    t.ok(r.returncode == 1, '--socket is not accepted yet: exit 1', r)
    sd = os.path.join(tmp, 'nested', 'state')
    sock = os.path.join(tmp, 'q.sock')
    p = qmp.start_vbackupd(exe, sock, sd)
    t.ok(os.path.isdir(sd), '--state-dir is created')
    mon = qmp.connect(sock)
    t.eq(mon.command('quit'), {}, 'quit replies')
    t.eq(p.wait(10), 0, 'quit: exit status 0')
    t.ok(not os.path.exists(sock), 'quit: socket removed')

    r = subprocess.run([exe, '--qmp', os.path.join(tmp, 'no', 'such.sock'),
                        '--foreground', '--state-dir', sd],
                       capture_output=True, text=True)
    t.ok(r.returncode == 1 and 'Cannot listen on QMP socket' in r.stderr,
         'unusable socket path: exit 1 with a message', r)

    # without --foreground: the parent returns once the socket listens
    r = subprocess.run([exe, '--qmp', sock, '--state-dir', sd],
                       capture_output=True, text=True, timeout=10)
    t.eq(r.returncode, 0, 'background start: exit status 0')
    try:
        mon = qmp.connect(sock)
        t.eq(mon.command('query-jobs'), [], 'background daemon answers')
    finally:
        if os.path.exists(sock):
            qmp.connect(sock).command('quit')  # never leave it running
    for _ in range(500):
        if not os.path.exists(sock):
            break
        time.sleep(0.01)
    t.ok(not os.path.exists(sock), 'background daemon quits')


def main():
    exe = os.path.abspath(sys.argv[1])
    t = Tap()
    tmp = tempfile.mkdtemp(prefix='qmp-smoke-')
    dirs = {'ours': os.path.join(tmp, 'ours'),
            'theirs': os.path.join(tmp, 'theirs')}
    for d in dirs.values():
        os.mkdir(d)
    vsock = os.path.join(tmp, 'v.sock')
    qsock = os.path.join(tmp, 'q.sock')
    vb = qmp.start_vbackupd(exe, vsock, os.path.join(tmp, 'state'))
    qsd = qmp.start_qsd(qsock, QSD)
    try:
        test_greeting(t, vsock, qsock)
        pair = Pair(qmp.connect(vsock), qmp.connect(qsock))
        test_errors(t, pair)
        img, base = test_jobs_and_nodes(t, pair, dirs)
        test_inline_and_chain(t, pair, dirs, base)
        test_format_specific(t, pair, dirs)
        pair.ours.img = img['ours']
        test_qemu_io(t, pair.ours)
        test_two_clients(t, vsock, dirs['ours'])
        pair.ours.command('blockdev-del', {'node-name': 'drive0'})
        pair.ours.command('blockdev-del', {'node-name': 'disk0-file'})
        pair.ours.command('blockdev-add', {'driver': 'qcow2',
                                           'node-name': 'drive0', 'file': {
                                               'driver': 'file',
                                               'filename': img['ours']}})
        t.eq(pair.ours.hmp('qemu-io drive0 "write -P 0x76 3M 4k"'), '',
             'a write left for shutdown to flush')

        rc = qmp.stop(vb, signal.SIGTERM)
        t.eq(rc, 0, 'SIGTERM: vbackupd exits 0')
        t.ok(not os.path.exists(vsock), 'SIGTERM: socket removed')
        qmp.stop(qsd, signal.SIGTERM)

        r = subprocess.run(['qemu-img', 'check', img['ours']],
                           capture_output=True, text=True)
        t.ok(r.returncode == 0 and 'No errors' in r.stdout,
             'qemu-img check of the image vbackupd wrote', r.stdout + r.stderr)
        r = subprocess.run(['qemu-img', 'info', '--output=json',
                            img['ours']], capture_output=True, text=True)
        t.eq(json.loads(r.stdout)['virtual-size'], 128 << 20,
             'qemu-img info: virtual size 128M after block_resize')
        # 32M was discarded through the discard=unmap node
        for off, pat in (('0', '0x49'), ('1M', '0x6c'), ('32M', '0'),
                         ('2M', '0'), ('3M', '0x76')):
            length = '4k' if off == '3M' else '64k'
            r = subprocess.run(['qemu-io', '-f', 'qcow2', '-r', '-c',
                                'read -P %s %s %s' % (pat, off, length),
                                img['ours']], capture_output=True, text=True)
            t.ok(r.returncode == 0 and 'verification failed' not in r.stdout,
                 'real qemu-io reads pattern %s at %s' % (pat, off),
                 r.stdout + r.stderr)
        r = subprocess.run(['qemu-img', 'info', '--output=json',
                            '--backing-chain',
                            os.path.join(dirs['ours'], 'overlay.qcow2')],
                           capture_output=True, text=True)
        chain = json.loads(r.stdout)
        t.ok(chain[0]['backing-filename'] == base['ours'] and
             chain[0]['format-specific']['data']['lazy-refcounts'] and
             chain[0]['format-specific']['data']['refcount-bits'] == 8 and
             chain[1]['format-specific']['data']['compat'] == '0.10' and
             chain[1]['cluster-size'] == 4096,
             'qemu-img info: blockdev-create options were honoured', chain)
        test_options(t, exe, tmp)
    finally:
        for p in (vb, qsd):
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
