"""qmp.py: a tiny QMP client (Python standard library only).

Used by vbackup's interop tests and demo scripts, against vbackupd and
against qemu-storage-daemon alike:

    import qmp
    daemon = qmp.start_vbackupd(exe, sock_path, state_dir)
    mon = qmp.connect(sock_path)            # greeting + qmp_capabilities
    mon.command('blockdev-add', driver='file', filename='/tmp/a.img',
                node_name='f0')             # '_' in keywords becomes '-'
    reply = mon.cmd('query-jobs')           # the whole reply dict
    for ev in mon.events(): ...             # events received so far
    mon.wait_event('JOB_STATUS_CHANGE', lambda e: e['data']['status'] == 'concluded')
    mon.hmp('qemu-io drive0 "write -P 0x49 0 64k"')

Every message QMP sends is one line of JSON; replies are told from events
by their "return"/"error" member.  The last reply's raw line is kept in
`last_raw` so tests can compare replies byte for byte with a real QEMU.
"""

import json
import os
import select
import signal
import socket
import subprocess
import time


class QMPError(Exception):
    """A QMP error reply: .cls is the error class, .desc the text."""

    def __init__(self, reply):
        err = reply['error']
        super().__init__('%s: %s' % (err['class'], err['desc']))
        self.cls = err['class']
        self.desc = err['desc']


class QMP:
    def __init__(self, path, negotiate=True, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b''
        self.pending_events = []
        self.last_raw = None
        self.greeting_raw = self._read_line(timeout)
        self.greeting = json.loads(self.greeting_raw)
        if negotiate:
            self.command('qmp_capabilities')

    # ---- wire -------------------------------------------------------

    def _read_line(self, timeout):
        """One raw message line (without CR LF), or None on timeout."""
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('QMP connection closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return line.rstrip(b'\r').decode('utf-8')

    def send_raw(self, text):
        """Send @text as is; return the next reply (events are queued)."""
        self.sock.sendall(text.encode('utf-8') if isinstance(text, str)
                          else text)
        return self._reply()

    def _reply(self):
        while True:
            line = self._read_line(self.timeout)
            if line is None:
                raise TimeoutError('no QMP reply within %.0fs' % self.timeout)
            msg = json.loads(line)
            if 'event' in msg:
                self.pending_events.append(msg)
                continue
            self.last_raw = line
            return msg

    # ---- commands ---------------------------------------------------

    @staticmethod
    def _args(arguments, kwargs):
        args = dict(arguments or {})
        for key, value in kwargs.items():
            args[key.replace('_', '-')] = value
        return args

    def cmd(self, execute, arguments=None, /, cmd_id=None, **kwargs):
        """Run @execute; return the reply dict ({"return": ...} or
        {"error": ...}).  Arguments come as a dict and/or keywords (any
        name, "name" included; '_' becomes '-')."""
        msg = {'execute': execute}
        args = self._args(arguments, kwargs)
        if args:
            msg['arguments'] = args
        if cmd_id is not None:
            msg['id'] = cmd_id
        return self.send_raw(json.dumps(msg) + '\n')

    def command(self, execute, arguments=None, /, **kwargs):
        """Run @execute; return its "return" value or raise QMPError."""
        reply = self.cmd(execute, arguments, **kwargs)
        if 'error' in reply:
            raise QMPError(reply)
        return reply['return']

    def hmp(self, command_line):
        """human-monitor-command; returns the output string."""
        return self.command('human-monitor-command',
                            {'command-line': command_line})

    # ---- events -----------------------------------------------------

    def events(self, wait=0.0):
        """All events received so far (and within @wait seconds)."""
        deadline = time.monotonic() + wait
        while True:
            line = self._read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            msg = json.loads(line)
            if 'event' in msg:
                self.pending_events.append(msg)
        out, self.pending_events = self.pending_events, []
        return out

    def wait_event(self, name, match=None, timeout=None):
        """Wait for event @name (for which match(event) is true), return it;
        events before it stay queued for events()."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while True:
            for i in range(seen, len(self.pending_events)):
                ev = self.pending_events[i]
                if ev['event'] == name and (match is None or match(ev)):
                    del self.pending_events[i]
                    return ev
            seen = len(self.pending_events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no %s event' % name)
            line = self._read_line(left)
            if line is not None:
                msg = json.loads(line)
                if 'event' in msg:
                    self.pending_events.append(msg)

    def job_statuses(self, job_id, until='concluded', timeout=None):
        """The JOB_STATUS_CHANGE statuses of @job_id up to @until."""
        out = []
        while not out or out[-1] != until:
            ev = self.wait_event('JOB_STATUS_CHANGE',
                                 lambda e: e['data']['id'] == job_id,
                                 timeout)
            out.append(ev['data']['status'])
        return out

    def close(self):
        self.sock.close()


def connect(path, negotiate=True, timeout=30.0):
    """Connect to the QMP socket @path (and negotiate capabilities)."""
    return QMP(path, negotiate, timeout)


def _wait_socket(path, proc, timeout):
    """Wait until @path accepts connections: the file can exist (bound)
    before the daemon listens, so probe with a real connect."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('daemon exited with %d' % proc.returncode)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.02)
    raise TimeoutError('no socket %s' % path)


def start_vbackupd(exe, sock_path, state_dir, extra=(), timeout=10.0,
                   stdout=subprocess.DEVNULL):
    """Start `vbackupd --qmp SOCK --foreground`; return the Popen."""
    proc = subprocess.Popen([exe, '--qmp', sock_path, '--state-dir',
                             state_dir, '--foreground'] + list(extra),
                            stdout=stdout, stderr=subprocess.PIPE)
    _wait_socket(sock_path, proc, timeout)
    return proc


def start_qsd(sock_path, exe='/usr/bin/qemu-storage-daemon', timeout=10.0):
    """Start qemu-storage-daemon with a QMP monitor on @sock_path."""
    proc = subprocess.Popen([exe, '--chardev',
                             'socket,id=m0,path=%s,server=on,wait=off'
                             % sock_path, '--monitor', 'chardev=m0'],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _wait_socket(sock_path, proc, timeout)
    return proc


def stop(proc, sig=signal.SIGTERM, timeout=10.0):
    """Send @sig and wait; returns the exit status (None if it hung)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
