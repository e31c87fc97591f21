# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch work that names its owner, so that what a killed run left is found and removed.

Every scratch thing a restore creates carries a *lease*: the host, the boot, the pid and the
start time of the process that made it - a PostgreSQL scratch database in its comment, a work
directory in its ``owner.json``, a files scratch directory in a ``.owner`` file beside it. It is
*provably stale* when its owner ran on this host and that process is gone (another boot, or no
process with that pid and start time). Anything else is kept: a live restore's work, work of
another host, and leftovers without a lease (older versions), which are reported instead.

The next restore of the same target sweeps first, and ``operations.cleanup`` (the ``cleanup``
module, ``offsite-backup cleanup``) sweeps on request; both report what they removed.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import shutil
import socket
import tempfile

from . import lifeline

OWNER_FILE = 'owner.json'
WORK_PREFIXES = ('offsite-restore-', 'offsite-redis-')
MARK = 'offsite.backup scratch '


def boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id') as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def lease():
    """Who owns what this process creates."""
    started = lifeline.process_start(os.getpid())
    return {'host': socket.gethostname(), 'boot': boot_id(), 'pid': os.getpid(),
            'start': started[1] if started else None}


def owner_gone(owner):
    """True when the lease's process has provably ended, False when it runs, None when that
    cannot be told from here (another host, no lease)."""
    if not isinstance(owner, dict) or owner.get('host') != socket.gethostname():
        return None
    if owner.get('boot') and owner.get('boot') != boot_id():
        return True  # that boot is over, and every process of it
    try:
        return not lifeline.alive(int(owner['pid']), int(owner['start']))
    except (KeyError, TypeError, ValueError):
        return None


def describe(owner):
    if not isinstance(owner, dict):
        return 'no owner recorded (an older version, or killed while creating it)'
    return 'pid %s on %s' % (owner.get('pid'), owner.get('host'))


def comment(owner=None):
    """The text that marks a scratch database, e.g. as its COMMENT."""
    return MARK + json.dumps(owner or lease(), sort_keys=True)


def parse_comment(text):
    if not text or not text.startswith(MARK):
        return None
    try:
        return json.loads(text[len(MARK):])
    except ValueError:
        return None


def write_owner(path):
    """Write this process's lease to ``path`` (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        json.dump(lease(), handle)


def read_owner(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def make_work_dir(parent, prefix='offsite-restore-'):
    """A 0700 work directory under ``parent`` holding its owner's lease."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    write_owner(os.path.join(path, OWNER_FILE))
    return path


class Sweep(object):
    """What one sweep removed and what it found but kept (with why)."""

    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.removed = []
        self.kept = []

    def judge(self, what, owner, remove):
        """Remove ``what`` (calling ``remove()``) when its owner is provably gone."""
        gone = owner_gone(owner)
        if gone:
            if not self.check_mode:
                try:
                    remove()
                except Exception as exc:  # one stuck leftover must not hide the others
                    self.kept.append({'what': what, 'why': 'removing it failed: %s' % exc})
                    return
            self.removed.append(what)
        elif gone is None:
            self.kept.append({'what': what, 'why': 'owner unknown: %s' % describe(owner)})
        # a live owner's work is none of our business: not even reported

    def result(self):
        return {'removed': self.removed, 'kept': self.kept}


def sweep_work_dirs(parent, sweep):
    """Work directories of dead restores under ``parent`` (a restore's ``work_dir``)."""
    try:
        names = sorted(os.listdir(parent))
    except (IOError, OSError):
        return sweep
    for name in names:
        path = os.path.join(parent, name)
        if name.startswith(WORK_PREFIXES) and os.path.isdir(path) and not os.path.islink(path):
            sweep.judge('work directory %s' % path, read_owner(os.path.join(path, OWNER_FILE)),
                        lambda path=path: shutil.rmtree(path, ignore_errors=True))
    return sweep


def sweep_beside(target, sweep):
    """Scratch directories of dead files restores next to ``target`` (``.<name>.restore-<hex>``
    with its ``.owner`` file beside it)."""
    parent, base = os.path.split(os.path.abspath(target))
    pattern = re.compile(r'^\.%s\.restore-[0-9a-f]{8}$' % re.escape(base))
    try:
        names = sorted(os.listdir(parent))
    except (IOError, OSError):
        return sweep
    for name in names:
        path = os.path.join(parent, name)
        if pattern.match(name) and os.path.isdir(path) and not os.path.islink(path):
            def remove(path=path):
                shutil.rmtree(path, ignore_errors=True)
                remove_file(path + '.owner')
            sweep.judge('scratch directory %s' % path, read_owner(path + '.owner'), remove)
    return sweep


def remove_file(path):
    try:
        os.unlink(path)
    except OSError:
        pass
