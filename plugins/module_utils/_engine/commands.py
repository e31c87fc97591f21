# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""External commands: run them, record them, never put a secret on their command line.

Secrets reach tools through the environment (``PGPASSWORD``) or 0600 files, so the
recorded argv is safe to return as ``executed_commands`` and invisible secrets stay out of
``ps``. Every child dies with the engine, even when the engine is SIGKILLed
(``lifeline.die_with_parent``): no orphaned pg_restore or tar keeps writing.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading

from . import lifeline
from .errors import DependencyError

STDERR_TAIL = 2000
# A pipe from a producer (pg_dump) holds 64 KiB by default: the producer then stalls whenever
# we compress or hash. 1 MiB (Linux's default pipe-max-size) lets it run ahead; measured on a
# 2-core machine, dump of an 800 MB database ~6-13% faster with less CPU.
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ from Python 3.10 on; Linux only
STDBUF = 'stdbuf'  # coreutils: runs a program with the stdio buffers it is told


class CommandLog(object):
    """The commands one engine call executed, in order, for ``executed_commands``.

    One log is handed to everything that call opens (sources, repositories, encryption,
    signing), so it lists every external command that ran, whichever part ran it; parts that
    speak to their peer through a Python library (local, s3, sftp, b2) record nothing.
    Secrets never go into argv; as a second line of defence every value given to ``mask``
    (the secret options of what was opened) is replaced by ``***`` in what is recorded.
    Repositories of an upload record from their own threads: appending is locked."""

    def __init__(self):
        self.commands = []
        self._secrets = set()
        self._lock = threading.Lock()

    def mask(self, secrets):
        """Never record these values (too short ones, 3 characters or fewer, would mangle
        ordinary words and are not masked)."""
        with self._lock:
            self._secrets.update(str(s) for s in secrets or () if s is not None and len(str(s)) > 3)

    def record(self, argv):
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
            self.commands.append(' '.join(shlex.quote(self._masked(str(a), secrets)) for a in argv))

    @staticmethod
    def _masked(arg, secrets):
        # before quoting: a quoted secret (one with a ' in it) would no longer be found
        for secret in secrets:
            arg = arg.replace(secret, '***')
        return arg


# Debian's PostgreSQL client commands (/usr/bin/psql, pg_dump, pg_restore, ...) are links to
# postgresql-common's pg_wrapper, a Perl script that picks a version and execs it
PG_WRAPPER = 'pg_wrapper'
PG_BINROOT = '/usr/lib/postgresql'
PG_WRAPPER_ENV = {'PGSYSCONFDIR': '/etc/postgresql-common'}  # what pg_wrapper sets when unset
_PAST_WRAPPER = set()  # the paths which() gave instead of pg_wrapper's links


def which(tool, purpose):
    path = shutil.which(tool)
    if not path:
        raise DependencyError('%s is not installed on this node (needed %s)' % (tool, purpose),
                              'install it (Debian: the package that ships %s) or add it to PATH' % tool)
    return _past_pg_wrapper(tool, path)


def _past_pg_wrapper(tool, path):
    """The program pg_wrapper would exec for ``tool`` at ``path``, or ``path``.

    pg_wrapper costs ~25 ms of CPU a call, and a restore starts dozens of pg_restore and psql
    processes (one per piece of a table). Given a host, as the engine always gives it, the
    wrapper runs the newest installed version that has the command (``get_newest_version`` in
    PgCommon.pm); so does this, with the same PGSYSCONFDIR default (``child_env``). Without a
    host it would run the default cluster's version, so ``pg_dump --version`` could check
    another binary than the dump then ran; here both are the same."""
    if os.path.basename(os.path.realpath(path)) != PG_WRAPPER:
        return path
    try:
        entries = os.listdir(PG_BINROOT)
    except OSError:
        return path
    found = []
    for entry in entries:
        program = os.path.join(PG_BINROOT, entry, 'bin', tool)
        if re.match(r'^\d+(\.\d+)?$', entry) and os.access(program, os.X_OK):
            found.append((float(entry), program))
    if not found:
        return path
    program = max(found)[1]
    _PAST_WRAPPER.add(program)
    return program


def block_buffered(argv, stdin=False):
    """``argv`` run with its standard output (``stdin``: input) in blocks of PIPE_SIZE
    (``stdbuf -o``/``-i``), where coreutils' stdbuf is installed; else as it is.

    Why: a tool that writes with stdio (pg_dump) fills a pipe 4 KiB at a time, glibc's buffer
    for a pipe, and each write wakes the reader for those 4 KiB: 850 MB of pg_dump output
    came in 65,000-70,000 reads into a 1 MiB pipe, 0.60 s of the reader's CPU, against 810
    reads and 0.10 s with ``stdbuf -o 1M`` (a reader that does nothing else; pg_dump's own CPU
    unchanged). A tool that reads with stdio (pg_restore) takes 4 KiB from a pipe at a time,
    and each read woke our feeder for one more page: a following restore's system CPU fell
    from 1.13-1.46 to 0.91-1.13 s with ``-i``. stdbuf execs the tool in its place: same
    process, same exit status."""
    stdbuf = _working_stdbuf()
    return [stdbuf, '-i' if stdin else '-o', str(PIPE_SIZE)] + list(argv) if stdbuf else list(argv)


_STDBUF = []  # [path or None], once per process


def _working_stdbuf():
    """stdbuf's path if it runs a program here, else None. It preloads a library of its own
    (libstdbuf.so): a coreutils without it, or a system that refuses the preload, would fail
    every dump that used it, so it is tried once (``stdbuf -o 0 true``) before it is trusted."""
    if not _STDBUF:
        path = shutil.which(STDBUF)
        true = shutil.which('true')
        try:
            works = bool(path and true) and subprocess.call(
                [path, '-o', '0', true], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=10) == 0
        except (OSError, subprocess.SubprocessError):
            works = False
        _STDBUF.append(path if works else None)
    return _STDBUF[0]


def _program(argv):
    """The program ``argv`` runs, past a ``block_buffered`` prefix."""
    if len(argv) > 3 and os.path.basename(argv[0]) == STDBUF and argv[1] in ('-i', '-o'):
        return argv[3]
    return argv[0] if argv else None


def child_env(extra, program=None):
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in extra.items() if v is not None))
    if program in _PAST_WRAPPER:
        for key, value in PG_WRAPPER_ENV.items():
            env.setdefault(key, value)
    return env


def run(argv, log, env=None, stdin=None, timeout=None, cwd=None):
    """Run to completion; returns (rc, stdout text, stderr text). Never raises on rc. ``cwd``:
    where it runs (a tool run as another user may not enter ours)."""
    log.record(argv)
    proc = subprocess.run(argv, env=child_env(env or {}, _program(argv)), stdin=stdin, stdout=subprocess.PIPE, cwd=cwd,
                          stderr=subprocess.PIPE, timeout=timeout, check=False, preexec_fn=lifeline.prepare())
    return (proc.returncode, proc.stdout.decode('utf-8', 'replace'),
            proc.stderr.decode('utf-8', 'replace'))


@contextlib.contextmanager
def streaming(argv, log, env=None, stdin=None, stdout=None, pass_fds=()):
    """Start a producer/consumer process; yields it. stderr goes to a temp file so a chatty
    tool can never block on a full pipe; read it with ``stderr_tail``. The caller checks
    the exit status (a pipe must never hide a failing process). ``pass_fds``: descriptors the
    child inherits, e.g. the read end of a pipe holding a passphrase (``gpg --passphrase-fd``)."""
    log.record(argv)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=child_env(env or {}, _program(argv)), stdin=stdin,
                                stdout=stdout if stdout is not None else subprocess.PIPE,
                                stderr=err, pass_fds=pass_fds, preexec_fn=lifeline.prepare())
        proc.stderr_file = err
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                _grow_pipe(pipe)
        try:
            yield proc
        finally:
            for pipe in (proc.stdout, proc.stdin):
                if pipe is not None:
                    try:
                        pipe.close()
                    except (OSError, ValueError):
                        pass
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def feed(proc, data):
    """Write ``data`` (an iterable of bytes) to the stdin of ``proc`` and close it. A process
    that stops reading is not an error here: its exit status and stderr say why."""
    try:
        for chunk in data:
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _grow_pipe(pipe):
    try:
        import fcntl
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, 'F_SETPIPE_SZ', F_SETPIPE_SZ), PIPE_SIZE)
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or over the user's pipe limits: the default size still works


def stderr_tail(proc):
    proc.stderr_file.flush()
    proc.stderr_file.seek(0, os.SEEK_END)
    size = proc.stderr_file.tell()
    proc.stderr_file.seek(max(0, size - STDERR_TAIL))
    return proc.stderr_file.read().decode('utf-8', 'replace').strip()


def killed_by(rc):
    """The name of the signal that ended a process (``rc`` < 0 from subprocess), or None.
    A killed tool writes no error message: say so instead of "no error output"."""
    if rc is None or rc >= 0:
        return None
    import signal
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return 'signal %d' % -rc
