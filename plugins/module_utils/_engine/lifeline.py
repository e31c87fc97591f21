# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A restore whose controller died, or that was told to stop, changes nothing.

``guarded()`` wraps the part of a restore that writes:

- it records the processes that started this one (each pid with its start time, from
  ``/proc``): ``ansible-playbook``, its worker, the shell that runs the module; or the shell
  or cron that runs ``offsite-backup``. When any of them has ended, the operator who asked
  for the restore can no longer see or stop it, so the restore stops: a watcher thread
  notices within a second and interrupts the main thread (loading stops, the scratch work is
  removed), and ``check()``, called right before every swap, refuses to swap.
- SIGTERM, SIGINT and SIGHUP raise ``Interrupted`` in the main thread, so every ``finally``
  runs: child processes are stopped, scratch databases dropped, work directories removed.
  The signal is remembered: ``check()`` refuses a swap even if a ``except Exception`` on
  the way swallowed the exception.

Child processes die with the engine even on SIGKILL, which no handler sees:
``commands`` starts every tool with the kernel's parent-death signal (``die_with_parent``).
A daemon a restore starts on purpose (a PostgreSQL server) has no such parent: ``warden``.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import signal
import threading

from .errors import BackupError

POLL_SECONDS = 1.0
SIGNALS = ('SIGTERM', 'SIGINT', 'SIGHUP')
PR_SET_PDEATHSIG = 1

_state = {'ancestors': None, 'stopped': None, 'raised': False}


class Interrupted(BackupError):
    """The restore was told to stop (a signal) or its controller died; nothing was swapped."""
    kind = 'interrupted'


def process_start(pid):
    """(state, start time in clock ticks since boot) of ``pid``, or None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (IOError, OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def parent_of(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return int(handle.read().rsplit(')', 1)[1].split()[1])
    except (IOError, OSError, IndexError, ValueError):
        return 0


def ancestors(pid=None):
    """[(pid, start time)] of every process above ``pid`` (default: this one), init excluded."""
    found = []
    pid = parent_of(pid or os.getpid())
    while pid > 1:
        started = process_start(pid)
        if started is None:
            break
        found.append((pid, started[1]))
        pid = parent_of(pid)
    return found


def alive(pid, start_time):
    """Is the process that had ``pid`` at ``start_time`` still running (not a zombie)?"""
    started = process_start(pid)
    return started is not None and started[0] not in ('Z', 'X') and started[1] == start_time


def dead_controller():
    """The pid of the first recorded ancestor that has ended, or None."""
    for pid, start_time in _state['ancestors'] or ():
        if not alive(pid, start_time):
            return pid
    return None


def check(before='swapping the restored copy in'):
    """Raise ``Interrupted`` when a signal arrived or the controller died (call it right before
    the one step that changes the target)."""
    if _state['stopped']:
        raise Interrupted('the restore stopped before %s: %s' % (before, _state['stopped']),
                          'nothing was swapped; the target is as it was')
    dead = dead_controller()
    if dead:
        raise Interrupted('the process that started this restore (pid %d) has ended; stopped before %s'
                          % (dead, before), 'nothing was swapped; the target is as it was')


@contextlib.contextmanager
def guarded():
    """Watch the controller and turn stop signals into ``Interrupted`` while the block runs.
    Signal handlers can only be set in the main thread: elsewhere only ``check()`` guards."""
    if _state['ancestors'] is not None:  # nested: the outer guard already watches
        yield
        return
    _state['ancestors'] = ancestors()
    _state['stopped'], _state['raised'] = None, False
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    done = threading.Event()

    def stop(signum, frame):
        if _state['raised']:
            return  # the first one is being handled: let the clean-up finish
        _state['raised'] = True
        # the watcher names the ended controller before it sends SIGTERM
        _state['stopped'] = _state['stopped'] or signal.Signals(signum).name
        raise Interrupted('the restore stopped: %s' % _state['stopped'],
                          'its scratch work was removed; the target is as it was')

    def watch():
        while not done.wait(POLL_SECONDS):
            dead = dead_controller()
            if dead:
                _state['stopped'] = _state['stopped'] or 'the process that started it (pid %d) ended' % dead
                try:  # wake the main thread even inside a blocking wait
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                except (OSError, ValueError):
                    pass
                return

    if main:
        for name in SIGNALS:
            number = getattr(signal, name)
            previous[number] = signal.signal(number, stop)
    watcher = threading.Thread(target=watch, name='offsite-lifeline')
    watcher.daemon = True
    if main:
        watcher.start()
    try:
        yield
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        for number, handler in previous.items():
            signal.signal(number, handler)
        _state['ancestors'] = None


_prctl = []


def die_with_parent():
    """``preexec_fn`` of every child process: the kernel kills it when the engine dies, even on
    SIGKILL (prctl PR_SET_PDEATHSIG). Linux only; elsewhere a no-op. The libc function is
    looked up before the fork (``prepare``): a forked child must not load libraries."""
    if _prctl:
        _prctl[0](PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def prepare():
    """Look up prctl once, in the parent; returns ``die_with_parent`` or None off Linux."""
    if not _prctl:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            _prctl.append(libc.prctl)
        except (ImportError, OSError, AttributeError):
            return None
    return die_with_parent
