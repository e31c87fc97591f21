# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recovery window of a set in one repository (point-in-time recovery, docs/pitr.md): from
the oldest kept base backup's end (consistent from then on) to the newest archived WAL
segment's time (when wal-push stored it), and a moment inside it for the DR drill.

Only the newest segment of each timeline has its manifest read (one small object per
timeline), whatever the length of the archive.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import math
import random

from . import manifest as mf
from . import wal
from .errors import ConfigError, NotFoundError


def base_backup_end(backup):
    """When a base backup had ended (consistent from then on), or None for other backups."""
    facts = (backup.manifest or {}).get('source') or {}
    if facts.get('format') != 'basebackup' or not facts.get('stop_time'):
        return None
    return mf.parse_time(facts['stop_time'])


def newest_segment(repo, set_name):
    """(file name, its manifest) of the newest archived segment of ``set_name`` in ``repo``, by
    the time it was archived, among the newest of each timeline; None without WAL."""
    newest = {}
    for obj in repo.list(wal.directory(set_name)):
        name = obj.key.rsplit('/', 1)[-1]
        if not name.endswith(wal.MANIFEST_EXT):
            continue
        try:
            found = wal.parse_name(name[:-len(wal.MANIFEST_EXT)])
        except ConfigError:
            continue  # not ours
        if found.kind not in ('segment', 'partial'):
            continue
        order = (found.log, found.seg, found.kind == 'segment')
        if found.timeline not in newest or order > newest[found.timeline][0]:
            newest[found.timeline] = (order, found.name, obj.key)
    best = None
    for dummy, name, key in newest.values():
        manifest = wal.loads(repo.get_bytes(key), repo.location(key), set_name, name)
        if best is None or manifest['created'] > best[1]['created']:
            best = (name, manifest)
    return best


def recovery_window(repo, catalog):
    """``{earliest, latest, newest_wal, earliest_timestamp, latest_timestamp}`` of the catalog's
    set in ``repo``, or None when it has no base backup or no archived WAL."""
    ends = [end for end in (base_backup_end(b) for b in catalog.trusted) if end is not None]
    if not ends:
        return None
    newest = newest_segment(repo, catalog.name)
    if newest is None:
        return None
    earliest, latest = min(ends), mf.parse_time(newest[1]['created'])
    return {'earliest': mf.format_time(earliest), 'latest': mf.format_time(latest), 'newest_wal': newest[0],
            'earliest_timestamp': earliest.timestamp(), 'latest_timestamp': latest.timestamp()}


def choose_moment(window, point_in_time, margin=60, rng=None):
    """A whole second (recovery_target_time is written to the second) inside ``window``: uniform
    between its start and ``margin`` seconds before its end for ``random`` (PostgreSQL stops a
    time target at the first commit after it, so the moment needs one after it in the archive:
    the margin keeps it off the newest segment's tail), else the time given, which must lie in
    the window. Returns an aware datetime."""
    if not window:
        raise NotFoundError('there is no recovery window: no base backup or no archived WAL',
                            'archive the WAL (wal-push) and take a base backup first')
    # the times are recorded to the second, cut: a base backup recorded as ending at s ended before s + 1
    low = math.ceil(window['earliest_timestamp']) + 1
    high = math.floor(window['latest_timestamp'] - margin)
    if point_in_time == 'random':
        if high < low:
            raise NotFoundError('the recovery window %s .. %s is shorter than the margin of %ss' % (
                window['earliest'], window['latest'], margin),
                'wait until more WAL is archived after the oldest base backup, or lower the margin')
        moment = (rng or random.SystemRandom()).randint(low, high)
        return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    moment = mf.parse_time(point_in_time)
    if not low <= moment.timestamp() <= window['latest_timestamp']:
        raise NotFoundError('point_in_time %s lies outside the recovery window %s .. %s'
                            % (mf.format_time(moment), window['earliest'], window['latest']),
                            'choose a time inside it, or random')
    return moment
