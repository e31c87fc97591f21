# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A warden: a small process that undoes a restore's work when the engine dies without doing so.

``lifeline`` turns signals and a dead controller into an orderly clean-up, and ``commands``
gives every child the kernel's parent-death signal. Neither reaches a daemon the restore starts
on purpose: ``pg_ctl start`` forks the postmaster and exits (a fork clears the parent-death
signal, and ``runuser`` changing the user clears it too), so after a ``kill -9`` of the engine
the postmaster would keep running on the port, half recovered, in a directory nobody removes.

The warden is started first (its own session, so a signal to the engine's process group does
not reach it). It reads what to undo as JSON lines on its stdin, each replacing the last:
``{"stop": [argv...], "directory": path, "created": bool, "remove": [paths], "prefetcher": path}``.
At end of file:

- after a line ``"done"`` (``disarm``): it exits, changing nothing (the restore finished, or
  cleaned up after itself);
- otherwise the engine died: it kills wal-fetch's prefetcher (the pid in the ``prefetcher`` lock
  file, while a process holds that lock: walspool.py), runs ``stop`` whenever
  ``<directory>/postmaster.pid`` exists,
  removes ``directory`` (when the restore created it) or empties it (when it was given empty),
  removes ``remove``, and repeats this until the directory stays gone or empty for a moment (a
  ``pg_ctl start`` orphaned mid-way may still fork its postmaster).

It runs the interpreter of the engine with ``-S`` and the standard library only.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import subprocess
import sys

DONE = 'done'

_SCRIPT = r'''
import json, os, shutil, subprocess, sys, time
spec, done = {}, False
for line in sys.stdin:
    line = line.strip()
    if line == '"done"':
        done = True
    elif line:
        spec = json.loads(line)
if done or not spec.get('directory'):
    sys.exit(0)
directory = spec['directory']
pid_file = os.path.join(directory, 'postmaster.pid')

def kill_prefetcher():
    import fcntl, signal
    path = spec.get('prefetcher')
    try:
        fd = os.open(path, os.O_RDWR)
    except (OSError, TypeError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: by the prefetcher whose pid it holds
        try:
            os.kill(int(open(path).read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    finally:
        os.close(fd)

def undo():
    kill_prefetcher()
    if os.path.exists(pid_file) and spec.get('stop'):
        subprocess.run(spec['stop'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd='/', timeout=120)
    if spec.get('created'):
        shutil.rmtree(directory, ignore_errors=True)
    elif os.path.isdir(directory):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
    for path in spec.get('remove') or ():
        shutil.rmtree(path, ignore_errors=True)

def clean():
    return not os.path.exists(directory) or not os.listdir(directory)

quiet = 0
for attempt in range(600):  # at most a minute
    if not clean() or os.path.exists(pid_file):
        undo()
        quiet = 0
    else:
        quiet += 1
        if quiet >= 30:  # three seconds without a postmaster or a file reappearing
            break
    time.sleep(0.1)
'''


class Warden(object):
    """``with Warden() as warden: warden.watch(...); ...; warden.disarm()``."""

    def __init__(self):
        self.proc = None
        self.spec = {}

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, '-S', '-c', _SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd='/',
                                     start_new_session=True, close_fds=True)
        return self

    def watch(self, **spec):
        """What to undo should the engine die now (merged into what was said before)."""
        self.spec.update(spec)
        self._send(json.dumps(self.spec, sort_keys=True))

    def disarm(self):
        """Nothing to undo: the restore ended (well, or after cleaning up itself)."""
        self._send(json.dumps(DONE))

    def _send(self, line):
        if self.proc is None or self.proc.stdin is None or self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write((line + '\n').encode('utf-8'))
            self.proc.stdin.flush()
        except (IOError, OSError, ValueError):
            pass

    def __exit__(self, *exc):
        # the engine lives: whatever happened was handled by its own clean-up
        self.disarm()
        try:
            self.proc.stdin.close()
        except (IOError, OSError, ValueError):
            pass
        self.proc.wait()
        return False
