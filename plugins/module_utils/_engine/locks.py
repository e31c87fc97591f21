# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long an Object Lock must last for a backup that retention keeps long-term. Pure.

Uploads lock each object for ``object_lock_days``. A backup that the policy keeps as a monthly
or yearly copy lives much longer than that, and would become deletable (by ransomware holding
the client's key) while it is still the only copy of its month or year. Retention therefore
extends the lock of those backups up to the time the policy will stop keeping them.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime

from .retention import parse_policy

LONG_TERM_UNITS = ('monthly', 'yearly')


def _month_start(year, month):
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime.datetime(year, month, 1, tzinfo=datetime.timezone.utc)


def _policy_end(unit, count, created):
    """The earliest time a kept backup can leave its ``count`` newest ``unit`` buckets: the
    start of the month (year) ``count`` after its own."""
    created = created.astimezone(datetime.timezone.utc)
    if unit == 'monthly':
        return _month_start(created.year, created.month + count)
    return _month_start(created.year + count, 1)


def _window_end(duration, created):
    """A backup kept by ``keep_within_<unit>: D`` is kept until about ``created + D``."""
    days = duration.years * 366 + duration.months * 31 + duration.days
    return created + datetime.timedelta(days=days, hours=duration.hours)


def lock_horizon(created, reasons, policy, now, lock_days=None):
    """The retain-until time a kept backup's objects need, or None when no monthly or yearly
    rule keeps it. The result is at least ``now + lock_days`` (rolling, for unlimited rules
    and for backups kept past the calendar bound) and rounded up to the next UTC midnight,
    so that runs within a day agree and a second run changes nothing."""
    policy = parse_policy(policy)
    long_term, ends = False, []
    for reason in reasons:
        words = reason.split()
        unit = next((u for u in LONG_TERM_UNITS if u in words), None)
        if unit is None:
            continue
        long_term = True
        if 'within' in words:
            ends.append(_window_end(getattr(policy, 'keep_within_' + unit), created))
        elif getattr(policy, 'keep_' + unit) > 0:
            ends.append(_policy_end(unit, getattr(policy, 'keep_' + unit), created))
        # keep_<unit>: -1 keeps it forever: only the rolling lock below applies
    if not long_term:
        return None
    if lock_days:
        ends.append(now + datetime.timedelta(days=int(lock_days)))
    if not ends:
        return None
    horizon = max(ends).astimezone(datetime.timezone.utc)
    midnight = horizon.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == horizon else midnight + datetime.timedelta(days=1)
