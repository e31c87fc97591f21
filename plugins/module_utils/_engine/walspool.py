# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wal-fetch's spool: the next WAL segments fetched ahead, as pgBackRest's asynchronous
archive-get does (docs/pitr.md, "Fetching ahead").

PostgreSQL runs restore_command once per segment, one after the other; each ``wal-fetch`` would
pay an interpreter, the engine's imports, a repository client and a round trip. With ``--spool
DIR`` (the restore gives it: a 0700 directory of the server's user inside the data directory,
created by the restore, removed when recovery has ended), a ``wal-fetch`` that fetched segment N
the ordinary way also forks, once, a detached prefetcher (its own session, so it outlives the
short-lived caller) that holds ``DIR/lock`` and fetches N+1 .. N+K into ``DIR`` with
``wal.fetch``: the same checks (manifest, signature, system identifier, stored and raw size and
sha256, decryption), through a partial file renamed to the segment's name once proven. The
next ``wal-fetch`` finds its segment there and renames it to ``%p`` (``serve``): no job file, no
repository, only this module and the standard library.

Invariants:

- a file named as a segment in DIR is proven (``wal.fetch`` renames only a proven file), and
  byte for byte what the synchronous fetch writes; a partial file is never served;
- ``DIR/key`` names the restore (job file, set, system identifier): a spool whose key is not the
  caller's is never served from, and is emptied before a prefetcher of this restore uses it;
- anything but "here it is" goes the synchronous way: a segment not (yet) spooled, a history
  file, a missing segment (reported as missing by the synchronous fetch: exit 1), an error;
- the prefetcher ends when the spool, its key, the postmaster or the recovery signal file goes,
  after ``IDLE_SECONDS`` without progress, or on SIGTERM (``stop``); a kill -9 at any point
  leaves at most partial files, and the lock free for the next one.

Only the standard library, and nothing imported that the fast path does not use: it runs once
per segment (``python -X importtime``).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import sys

SPOOL_NAME = 'offsite_wal_spool'   # inside the data directory
KEY_FILE = 'key'
LOCK_FILE = 'lock'
WANT_FILE = 'want'
FETCHING_FILE = 'fetching'         # the segment the prefetcher fetches now ('' when it waits)
WAIT_SECONDS = 120                 # how long wal-fetch waits for the segment the prefetcher fetches
SERVED_FILE = 'served'
PREFETCH = 8                       # segments kept ahead (128 MiB of 16 MiB segments)
IDLE_SECONDS = 60
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
# wal-fetch's options that take a value (the others: --json)
_VALUED = ('--env-file', '--set', '--identity-file', '--spool', '--system-identifier', '--prefetch')


def is_segment(name):
    return len(name) == 24 and all(c in '0123456789ABCDEF' for c in name)


def key_text(job, set_name, system_identifier):
    """What names a restore's spool: the (absolute) job file, the set and the system identifier."""
    return 'job=%s\nset=%s\nsystem_identifier=%s\n' % (os.path.abspath(job), set_name or '', system_identifier or '')


def parse(argv):
    """``{job, file, dest, spool, set, system_identifier}`` of a ``wal-fetch ... --spool DIR``
    command line, or None (anything else, or anything unusual, goes the ordinary way)."""
    if argv[:1] != ['wal-fetch']:
        return None
    positional, options, args = [], {}, list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg in _VALUED:
            if not args:
                return None
            options[arg] = args.pop(0)
        elif arg.startswith('--') and '=' in arg and arg.split('=', 1)[0] in _VALUED:
            name, value = arg.split('=', 1)
            options[name] = value
        elif arg == '--json' or arg.startswith('-'):
            return None
        else:
            positional.append(arg)
    if len(positional) != 3 or not options.get('--spool'):
        return None
    return {'job': positional[0], 'file': positional[1], 'dest': positional[2], 'spool': options['--spool'],
            'set': options.get('--set'), 'system_identifier': options.get('--system-identifier')}


def private(spool):
    """The spool is a directory of ours, closed to everyone else (else it is not used)."""
    import stat
    try:
        info = os.lstat(spool)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def serve(argv):
    """The fast path: 0 once the segment wanted was renamed from the spool to ``%p``; None when
    it is not there (the caller fetches it the ordinary way)."""
    wanted = parse(argv)
    if wanted is None or not is_segment(wanted['file']) or not private(wanted['spool']):
        return None
    spool = wanted['spool']
    if _read(os.path.join(spool, KEY_FILE)) != key_text(wanted['job'], wanted['set'], wanted['system_identifier']):
        return None
    if not _take(spool, wanted['file'], wanted['dest']):
        return None
    try:
        fd = os.open(os.path.join(spool, SERVED_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (wanted['file'] + '\n').encode('ascii'))
        finally:
            os.close(fd)
    except OSError:
        pass
    return 0


_ASKED = []  # the arguments serve_once was called with in this process


def serve_once(argv):
    """``serve``, asked at most once per process for the same arguments: the command line module
    asks when it is imported and its ``main`` asks again, and each ask waits for a segment being
    prefetched (up to WAIT_SECONDS) before the caller fetches it the ordinary way."""
    if list(argv) in _ASKED:
        return None
    _ASKED.append(list(argv))
    return serve(argv)


def _take(spool, name, dest):
    """Rename the spooled ``name`` to ``dest``; when the prefetcher is fetching it right now, wait
    for it as long as that lasts (it is alive and still at it). False: not spooled."""
    path = os.path.join(spool, name)
    waited = 0.0
    while True:
        try:
            os.rename(path, dest)
            return True
        except OSError:
            pass
        if waited >= WAIT_SECONDS or _read(os.path.join(spool, FETCHING_FILE)) != name or not _held(spool):
            # (it may have landed between the rename and these reads)
            try:
                os.rename(path, dest)
                return True
            except OSError:
                return False
        import time
        time.sleep(0.01)
        waited += 0.01


def _held(spool):
    """A prefetcher holds the spool's lock (it is alive)."""
    import fcntl
    try:
        fd = os.open(os.path.join(spool, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except (IOError, OSError):
        return True
    finally:
        os.close(fd)


def following(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """The segment after ``name`` on its timeline."""
    per_log = 0x100000000 // segment_size
    timeline, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16) + 1
    if seg >= per_log:
        log, seg = log + 1, 0
    return '%08X%08X%08X' % (timeline, log, seg)


def _position(name):
    return int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)


def ready(spool):
    """The segments the spool holds, proven, in order."""
    try:
        return sorted(n for n in os.listdir(spool) if is_segment(n))
    except OSError:
        return []


def _purge(spool, want):
    """Remove spooled segments that are not ahead of ``want`` on its timeline: PostgreSQL asked
    for ``want`` the ordinary way, so it moved on (or elsewhere) from what was fetched before."""
    timeline, log, seg = _position(want)
    for name in ready(spool):
        there = _position(name)
        if there[0] != timeline or there[1:] <= (log, seg):
            _remove(os.path.join(spool, name))


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _write(path, text):
    partial = path + '.tmp'
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
    os.rename(partial, path)


def _lock(spool):
    """An fd holding ``DIR/lock`` (flock, exclusive), or None when a prefetcher holds it (or the
    spool is gone: the restore ended)."""
    import fcntl
    try:
        fd = os.open(os.path.join(spool, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        os.close(fd)
        return None
    return fd


def start(spool, key, want, work, segment_size=DEFAULT_SEGMENT_SIZE):
    """After ``want`` was fetched the ordinary way: tell a running prefetcher, or fork one that
    runs ``work(spool, key, want)`` detached. True when one was started."""
    if not is_segment(want) or not private(spool):
        return False
    fd = _lock(spool)
    if fd is None:  # one runs: it reads what PostgreSQL asked for last
        if _read(os.path.join(spool, KEY_FILE)) == key:
            _write(os.path.join(spool, WANT_FILE), want)
        return False
    # no prefetcher runs (none started, or it ended or was killed): only the lock holder writes
    if _read(os.path.join(spool, KEY_FILE)) != key:
        for name in os.listdir(spool):
            if name != LOCK_FILE:
                _remove(os.path.join(spool, name))
        _write(os.path.join(spool, KEY_FILE), key)
    for name in os.listdir(spool):
        if name.endswith('.partial'):  # a killed prefetcher's
            _remove(os.path.join(spool, name))
    _write(os.path.join(spool, WANT_FILE), want)
    # said before the fork: the next wal-fetch waits for it rather than fetching it too
    _write(os.path.join(spool, FETCHING_FILE), following(want, segment_size))
    pid = os.fork()
    if pid:
        os.close(fd)  # the grandchild holds the same open file, so the lock stays held
        os.waitpid(pid, 0)
        return True
    status = 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.chdir('/')
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode('ascii'))
        import signal

        def terminate(signum, frame):
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, terminate)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        work(spool, key, want)
    except SystemExit:  # SIGTERM: stop
        pass
    except BaseException:
        status = 1
    finally:
        for name in os.listdir(spool) if os.path.isdir(spool) else ():
            if name.endswith('.partial'):
                _remove(os.path.join(spool, name))
        os._exit(status)


def ended(spool, key):
    """The prefetcher's reasons to stop: the spool or its key gone, the server stopped, recovery over."""
    if _read(os.path.join(spool, KEY_FILE)) != key:
        return 'the spool is gone or another restore\'s'
    data_directory = os.path.dirname(os.path.abspath(spool))
    pid = (_read(os.path.join(data_directory, 'postmaster.pid')) or '').split('\n', 1)[0].strip()
    if not pid.isdigit():
        return 'the server stopped'
    try:
        os.kill(int(pid), 0)
    except OSError as exc:
        import errno
        if exc.errno != errno.EPERM:
            return 'the server stopped'
    if not any(os.path.exists(os.path.join(data_directory, name)) for name in ('recovery.signal', 'standby.signal')):
        return 'recovery ended'
    return None


def prefetch(spool, key, want, fetch_one, not_archived, count=PREFETCH, segment_size=DEFAULT_SEGMENT_SIZE,
             idle=IDLE_SECONDS, poll=0.05, clock=None, sleep=None):
    """The prefetcher's loop: keep ``count`` proven segments after the one PostgreSQL asked for
    last in the spool. ``fetch_one(name, path)`` writes one, proven (``wal.fetch``), and raises
    ``not_archived`` when no repository holds it: nothing more is fetched until PostgreSQL asks
    for a later segment (the ordinary way). Any other failure ends the loop (raised): PostgreSQL's
    next wal-fetch meets it the ordinary way and reports it. Returns why it ended."""
    import time
    clock, sleep = clock or time.time, sleep or time.sleep
    following_name = following(want, segment_size)
    missing = None
    _purge(spool, want)
    seen = (want, ready(spool))
    progress = clock()
    fetching = os.path.join(spool, FETCHING_FILE)
    while True:
        why = ended(spool, key)
        if why:
            return why
        asked = _read(os.path.join(spool, WANT_FILE)) or want
        if is_segment(asked) and asked != want:
            want, missing = asked, None
            _purge(spool, want)
            following_name = following(want, segment_size)
        held = ready(spool)
        if (want, held) != seen:
            seen, progress = (want, held), clock()
        if missing is None and len(held) < count:
            path = os.path.join(spool, following_name)
            if not os.path.exists(path):
                _write(fetching, following_name)
                try:
                    fetch_one(following_name, path)
                except not_archived:
                    missing = following_name
                    _write(fetching, '')
                    continue
                except BaseException:
                    _write(fetching, '')
                    raise
            following_name = following(following_name, segment_size)
            progress = clock()
            continue
        if _read(fetching):
            _write(fetching, '')
        if clock() - progress > idle:
            return 'idle for %ss' % idle
        sleep(poll)


def stop(spool, wait=10):
    """The restore's end (or failure): end the prefetcher (SIGTERM, then SIGKILL), remove the
    spool. Returns how many segments PostgreSQL took from it."""
    import shutil
    import signal
    import time
    served = len((_read(os.path.join(spool, SERVED_FILE)) or '').split())
    deadline = time.time() + wait
    while os.path.isdir(spool):
        if time.time() > deadline + wait:  # a holder that never said who it is
            shutil.rmtree(spool, ignore_errors=True)
            break
        fd = _lock(spool)
        if fd is not None:
            try:
                shutil.rmtree(spool, ignore_errors=True)  # under the lock: no prefetcher starts meanwhile
            finally:
                os.close(fd)
            break
        pid = (_read(os.path.join(spool, LOCK_FILE)) or '').strip()
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGTERM if time.time() < deadline else signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    return served


def main():
    """The fast path of the ``offsite-backup`` command, before its imports (cli.py)."""
    return serve(sys.argv[1:])
