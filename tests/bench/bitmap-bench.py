#!/usr/bin/python3
"""bitmap-bench.py: random 4 KiB writes with 0, 16 and 256 recording
bitmaps, vbackup beside QEMU in the same run.  Not a pass/fail test.

Usage: bitmap-bench.py [BUILD_DIR]          (default: build)
env:   COUNTS   requests per run, each a row group (default "8192 65536":
                32 MiB and 256 MiB of 4 KiB; see "sync" below)
       RUNS     runs per configuration (default 3; medians are reported)
       BITMAPS  bitmap counts (default "0 16 256")
       CACHES   cache modes (default "none writeback")
       QDEPTH   qemu-img bench -d, requests in flight (default 64, its own)
       VDEPTH   bitmap-bench threads (default 1)
       BENCH_DIR  where the 1 GiB image goes (default a temp dir, /var/tmp)

Image: one 1 GiB qcow2 made by qemu-img with preallocation=full (v3,
64 KiB clusters), shared by both sides, so that no write allocates: the
cost measured is the write path's, bitmaps included.  The bitmaps are
added with block-dirty-bitmap-add (default granularity 64 KiB, not
persistent), so the image never changes shape between runs.

Requests: qemu-img bench has no random mode; both sides send request i to
(i * STEP) mod 1 GiB with STEP = 12345 * 4 KiB.  12345 is odd, so the
offsets are a permutation of the 262144 4 KiB slots scattered over the
whole image (no slot repeats within a run).

QEMU: qemu-storage-daemon 7.2 with the image (file node cache.direct=on
or off, and the same on the qcow2 node), its NBD server on a unix socket
exporting the qcow2 node writable, N bitmaps added over QMP, and
`qemu-img bench -w -f raw -s 4k -d QDEPTH` against nbd+unix://.  That is
how QEMU's figure in the issue was taken: every write reaching the node
walks every bitmap.

vbackup: there is no NBD server yet, so tests/bench/bitmap-bench writes
in-process through the same core vbackupd uses (qcow2 node opened as
blockdev-add would, bitmaps added with vbk_block_dirty_bitmap_add).  Its
time includes the final query of all bitmaps (which merges the pending
write log into every bitmap; its median is shown as "vbk sync s"), and
it checks every bitmap counts exactly the granules written.  The merge
ORs the log's non-zero words into each bitmap, so it costs at most
bitmaps x (image size / 64 granules) word operations whatever the number
of writes (256 words per bitmap for 1 GiB at 64 KiB); COUNTS gives a
sparse run (8192 writes: ~8000 separate granules) and a dense one
(65536 writes: nearly every granule of the image).  Throughputs of the two sides are not comparable
(NBD round trips vs direct calls); the slowdown against 0 bitmaps is.

Runs are interleaved (for each run: for each bitmap count: QEMU, then
vbackup) so that drift on a shared machine hits every configuration;
each run starts after a sync(), so that no run is throttled by the
write-back of the page cache the previous one dirtied (with writeback
caching a run dirties up to 1 GiB).
Beside the wall-clock throughput, the CPU time each side spent is
measured (QEMU: qemu-storage-daemon's user + system time over the
qemu-img bench run, from /proc; vbackup: bitmap-bench's own, writes and
sync) and shown as the increase over 0 bitmaps ("cpu+"): on a loaded
machine that is the steadier figure of what the bitmaps cost.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'interop'))
import qmp  # noqa: E402

QSD = '/usr/bin/qemu-storage-daemon'
REQ = 4096
IMG_SIZE = 1 << 30
STEP = 12345 * REQ


def env_int(name, default):
    return int(os.environ.get(name, default))


def proc_cpu(pid):
    """User + system seconds of process @pid so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def seconds(text, what):
    m = re.search(r'^%s ([0-9.]+) seconds\.$' % what, text, re.M)
    if not m:
        raise RuntimeError('no "%s" in:\n%s' % (what, text))
    return float(m.group(1))


class Bench:
    def __init__(self, build):
        self.vbk = os.path.join(build, 'tests', 'bench', 'bitmap-bench')
        if not os.access(self.vbk, os.X_OK):
            sys.exit('bitmap-bench: %s not built' % self.vbk)
        self.count = 0
        self.qdepth = env_int('QDEPTH', 64)
        self.vdepth = env_int('VDEPTH', 1)
        self.dir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(
            prefix='vbk-bitmap-bench.', dir='/var/tmp')
        self.own_dir = 'BENCH_DIR' not in os.environ
        self.img = os.path.join(self.dir, 'img.qcow2')

    def make_image(self):
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
                        'preallocation=full', self.img, str(IMG_SIZE)],
                       check=True)

    def start_qsd(self, direct):
        qsock = os.path.join(self.dir, 'qmp.sock')
        self.nsock = os.path.join(self.dir, 'nbd.sock')
        for path in (qsock, self.nsock):
            if os.path.exists(path):
                os.unlink(path)
        d = 'on' if direct else 'off'
        proc = subprocess.Popen([
            QSD,
            '--blockdev', 'driver=file,node-name=file0,filename=%s,'
            'cache.direct=%s' % (self.img, d),
            '--blockdev', 'driver=qcow2,node-name=drive0,file=file0,'
            'cache.direct=%s' % d,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % self.nsock,
            '--export', 'type=nbd,id=exp0,node-name=drive0,name=drive0,'
            'writable=on',
            '--chardev', 'socket,id=m0,path=%s,server=on,wait=off' % qsock,
            '--monitor', 'chardev=m0'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (os.path.exists(qsock) and os.path.exists(self.nsock)):
            if proc.poll() is not None or time.monotonic() > deadline:
                qmp.stop(proc)
                raise RuntimeError('qemu-storage-daemon did not start: %s'
                                   % proc.stderr.read().decode())
            time.sleep(0.02)
        return proc, qmp.connect(qsock)

    def run_qemu(self, n_bitmaps, direct):
        proc, mon = self.start_qsd(direct)
        try:
            for i in range(n_bitmaps):
                mon.command('block-dirty-bitmap-add', node='drive0',
                            name='bitmap%d' % i)
            cpu = proc_cpu(proc.pid)
            out = subprocess.run(
                ['qemu-img', 'bench', '-w', '-f', 'raw', '-c',
                 str(self.count), '-s', str(REQ), '-S', str(STEP), '-d',
                 str(self.qdepth), '--pattern=165',
                 'nbd+unix:///drive0?socket=%s' % self.nsock],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                check=True).stdout
            cpu = proc_cpu(proc.pid) - cpu
            bitmaps = [b for n in mon.command('query-named-block-nodes')
                       if n['node-name'] == 'drive0'
                       for b in n.get('dirty-bitmaps', [])]
            if len(bitmaps) != n_bitmaps or (
                    n_bitmaps and min(b['count'] for b in bitmaps) == 0):
                raise RuntimeError('qemu: bitmaps did not record')
            mon.cmd('quit')
            proc.wait(30)
        finally:
            qmp.stop(proc)
            proc.stderr.close()
        return seconds(out, 'Run completed in'), cpu

    def run_vbk(self, n_bitmaps, direct):
        out = subprocess.run(
            [self.vbk, '-n', str(n_bitmaps), '-c', str(self.count), '-s',
             str(REQ), '-S', str(STEP), '-d', str(self.vdepth), '-t',
             'none' if direct else 'writeback', self.img],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            check=True).stdout
        return (seconds(out, 'Run completed in'), seconds(out, 'Bitmaps synced in'),
                seconds(out, 'CPU time'))

    def mibps(self, secs):
        return self.count * REQ / secs / 1048576


def measure(bench, cache, runs, counts):
    """Interleaved runs of one cache mode; prints its table rows."""
    direct = cache == 'none'
    qemu = {n: [] for n in counts}
    vbk = {n: [] for n in counts}
    for _ in range(runs):
        for n in counts:
            # each run starts with no dirty page cache left by the one
            # before it (whose write-back would throttle it)
            os.sync()
            qemu[n].append(bench.run_qemu(n, direct))
            os.sync()
            vbk[n].append(bench.run_vbk(n, direct))
    med = statistics.median
    q0 = bench.mibps(med([w for w, _ in qemu[counts[0]]]))
    qc0 = med([c for _, c in qemu[counts[0]]])
    v0 = bench.mibps(med([w + s for w, s, _ in vbk[counts[0]]]))
    vc0 = med([c for _, _, c in vbk[counts[0]]])
    for n in counts:
        q = bench.mibps(med([w for w, _ in qemu[n]]))
        qc = med([c for _, c in qemu[n]])
        v = bench.mibps(med([w + s for w, s, _ in vbk[n]]))
        vc = med([c for _, _, c in vbk[n]])
        sync = med([s for _, s, _ in vbk[n]])
        print('%-9s %6d %4d %9.1f %7.1f%% %7.1f%% %9.1f %7.1f%% %7.1f%% '
              '%7.3f' % (cache, bench.count, n, q, 100 * (1 - q / q0),
                         100 * (qc / qc0 - 1), v, 100 * (1 - v / v0),
                         100 * (vc / vc0 - 1), sync))
        sys.stdout.flush()
        sys.stderr.write('  %s %d x %d runs (s): qemu wall/cpu %s | vbk '
                         'write+sync/cpu %s\n' % (
                             cache, bench.count, n,
                             ' '.join('%.3f/%.2f' % t for t in qemu[n]),
                             ' '.join('%.3f+%.3f/%.3f' % t for t in vbk[n])))


def main():
    # SIGTERM unwinds, so that no qemu-storage-daemon is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(sys.argv[1] if len(sys.argv) > 1 else 'build')
    runs = env_int('RUNS', 3)
    counts = [int(x) for x in os.environ.get('BITMAPS', '0 16 256').split()]
    caches = os.environ.get('CACHES', 'none writeback').split()
    sizes = [int(x) for x in os.environ.get('COUNTS', '8192 65536').split()]
    try:
        bench.make_image()
        print('bitmap-bench: random 4 KiB writes, 1 GiB qcow2 '
              '(preallocation=full), %d runs interleaved, medians;' % runs)
        print('  QEMU: qemu-storage-daemon + NBD, qemu-img bench -d %d; '
              'vbackup: in-process, %d thread(s), bitmap sync included'
              % (bench.qdepth, bench.vdepth))
        print('%-9s %6s %4s %9s %8s %8s %9s %8s %8s %7s' % (
            'cache', 'writes', 'bmps', 'qemu MiB/s', 'slow', 'cpu+',
            'vbk MiB/s', 'slow', 'cpu+', 'sync s'))
        for cache in caches:
            for bench.count in sizes:
                measure(bench, cache, runs, counts)
    finally:
        if bench.own_dir:
            shutil.rmtree(bench.dir, ignore_errors=True)
        elif os.path.exists(bench.img):
            os.unlink(bench.img)
    return 0


if __name__ == '__main__':
    sys.exit(main())
