# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A moment inside a set's recovery window for the DR drill (point-in-time recovery,
docs/pitr.md). The window itself is walchain.inspect's: backup_info's ``recovery_window``, from
the oldest trusted base backup's end to the newest segment recovery reaches without a gap.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import math
import random

from . import manifest as mf
from .errors import NotFoundError


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
