# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a retention policy costs: simulate a year of backups, price the bytes stored.

No I/O. :func:`simulate` makes a backup every ``interval_hours`` and applies the policy after
each one with :func:`retention.plan_retention` (the planner the retention module uses, so the
simulation keeps exactly what a real run would), recording the bytes stored at the end of each
day and every deletion. :func:`price` turns that into monthly costs for one price-table entry
(prices.py): storage per GB-month on the daily average, early-deletion fees for classes with a
minimum storage duration, upload requests, flat-priced boxes, and what one restore costs.

The seeds estimate by hand as "retained snapshots x size x price"; that counts a backup that is
at once the daily, weekly and monthly one three times, so it overestimates (see docs/costs.md).
Every backup is priced as a full artifact: deduplicating stores (restic, rsync --link-dest)
store less.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import math

from .errors import ConfigError
from .prices import NUMBER_FIELDS, PRICES, TEXT_FIELDS
from .retention import BackupRef, PolicyError, parse_policy, plan_retention

MAX_DAYS = 3660
DAYS_PER_MONTH = 30  # early-deletion fees: the remaining days at 1/30 of the monthly price each
UPLOADS_PER_BACKUP = 2  # artifact and manifest
ROUND = 4
# Retention runs after the dump and the upload, not in the backup's own second: keep_days N then
# drops the backup made exactly N days earlier, as the seeds' find -mtime does.
RETENTION_DELAY = datetime.timedelta(minutes=1)


class Simulation(object):
    """What a policy stores day by day: ``days`` holds (date, stored bytes, backups kept) at each
    day's end, ``removals`` (date, size, days lived), ``uploads`` the backups made per date."""

    def __init__(self):
        self.days = []
        self.removals = []
        self.uploads = {}
        self.made = 0
        self.newest_size = 0


def _number(what, value, minimum=0, integer=False):
    if isinstance(value, str):
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            raise ConfigError('%s: %r is not a number' % (what, value))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        raise ConfigError('%s: %r is not a %s' % (what, value, 'whole number' if integer else 'number'))
    if math.isnan(value) or value < minimum:
        raise ConfigError('%s: %r is below the minimum %s' % (what, value, minimum))
    return int(value) if integer else value


def _start(start):
    if start is None:  # the first day of next month, at 03:00 like the seeds' cron
        today = datetime.datetime.now(datetime.timezone.utc).date()
        first = (today.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
        return datetime.datetime(first.year, first.month, 1, 3, tzinfo=datetime.timezone.utc)
    if isinstance(start, datetime.datetime):
        value = start
    else:
        try:
            value = datetime.datetime.fromisoformat(str(start).strip().replace('Z', '+00:00'))
        except ValueError:
            raise ConfigError('start: %r is not an ISO-8601 time such as 2027-01-01T03:00:00Z' % (start,))
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def simulate(policy, backup_size, start=None, days=365, interval_hours=24, growth_percent_per_month=0,
             timezone='UTC'):
    """Back up ``backup_size`` bytes every ``interval_hours`` for ``days`` days from ``start``,
    applying ``policy`` after each backup; sizes grow by ``growth_percent_per_month`` (compound)."""
    size0 = _number('backup_size', backup_size, minimum=1, integer=True)
    days = _number('days', days, minimum=1, integer=True)
    if days > MAX_DAYS:
        raise ConfigError('days: %d is more than the %d days (ten years) an estimate covers' % (days, MAX_DAYS))
    interval = _number('interval_hours', interval_hours, minimum=1, integer=True)
    growth = _number('growth_percent_per_month', growth_percent_per_month, minimum=-99)
    try:
        rules = parse_policy(policy)
    except PolicyError as exc:
        raise ConfigError(str(exc))
    first = _start(start).astimezone(datetime.timezone.utc)

    sim = Simulation()
    kept = {}  # id -> (BackupRef, size)
    when = first
    for number in range(days):
        day = first.date() + datetime.timedelta(days=number)
        day_end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(),
                                            tzinfo=datetime.timezone.utc)
        while when < day_end:
            months = (when - first).total_seconds() / 86400.0 * 12 / 365
            size = int(round(size0 * (1 + growth / 100.0) ** months))
            ref = BackupRef('sim_%06d' % sim.made, when)
            kept[ref.id] = (ref, size)
            sim.made += 1
            sim.newest_size = size
            sim.uploads[day] = sim.uploads.get(day, 0) + 1
            try:
                decided = plan_retention([r for r, s in kept.values()], rules, tz=timezone, now=when + RETENTION_DELAY)
            except PolicyError as exc:
                raise ConfigError(str(exc))
            for gone in decided.remove:
                lived = (when - gone.time).total_seconds() / 86400.0
                sim.removals.append((day, kept.pop(gone.id)[1], lived))
            when += datetime.timedelta(hours=interval)
        sim.days.append((day, sum(s for r, s in kept.values()), len(kept)))
    return sim


def price_table(overrides=None):
    """The shipped table with ``overrides`` ({provider: {field: value}}) merged in; validated."""
    table = dict((name, dict(entry)) for name, entry in PRICES.items())
    for name, changes in (overrides or {}).items():
        if not isinstance(changes, dict):
            raise ConfigError('prices.%s: expected a mapping of price fields, got %r' % (name, changes))
        unknown = sorted(str(k) for k in changes if k not in NUMBER_FIELDS + TEXT_FIELDS)
        if unknown:
            raise ConfigError('prices.%s: unknown field(s) %s; valid fields: %s'
                              % (name, ', '.join(unknown), ', '.join(TEXT_FIELDS + NUMBER_FIELDS)))
        entry = table.setdefault(name, {'name': name})
        for key, value in changes.items():
            entry[key] = str(value) if key in TEXT_FIELDS else _number('prices.%s.%s' % (name, key), value)
    for name, entry in table.items():
        if not entry.get('currency'):
            raise ConfigError('prices.%s: a currency is needed (e.g. USD or EUR)' % name)
        if not entry.get('storage_per_gb_month') and not entry.get('flat_per_month'):
            raise ConfigError('prices.%s: give storage_per_gb_month or flat_per_month' % name)
        if entry.get('flat_per_month') and not entry.get('capacity_bytes'):
            raise ConfigError('prices.%s: flat_per_month needs capacity_bytes (the size of one box)' % name)
        if entry.get('storage_per_gb_month') and not entry.get('gb_bytes'):
            raise ConfigError('prices.%s: storage_per_gb_month needs gb_bytes (1000000000 or 1073741824)' % name)
    return table


def _days_in_month(day):
    following = (day.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return (following - day.replace(day=1)).days


def _months(sim):
    """{(year, month): [(date, stored, kept), ...]} in order."""
    grouped = {}
    for entry in sim.days:
        grouped.setdefault((entry[0].year, entry[0].month), []).append(entry)
    return grouped


def price(sim, entry):
    """Monthly costs of ``sim`` under one price-table entry."""
    def get(key):
        return entry.get(key) or 0
    per_gb = get('storage_per_gb_month')
    gb_bytes = float(get('gb_bytes') or 1)
    warnings = []
    months = []
    for (year, month), days in _months(sim).items():
        length = _days_in_month(days[0][0])
        dates = set(d for d, s, k in days)
        storage = early = 0.0
        if per_gb:
            billed = sum(max(stored - get('free_bytes'), 0, get('min_billed_bytes')) for d, stored, k in days)
            storage = billed / gb_bytes * per_gb / length
            minimum = get('min_storage_days')
            for day, size, lived in sim.removals:
                if day in dates and lived < minimum:
                    early += size / gb_bytes * per_gb * (minimum - lived) / DAYS_PER_MONTH
        if get('flat_per_month'):
            peak = max(stored for d, stored, k in days)
            boxes = max(1, int(math.ceil(peak / float(entry['capacity_bytes']))))
            if boxes > 1:
                warnings.append('%04d-%02d: %d bytes stored need %d boxes of %d bytes'
                                % (year, month, peak, boxes, entry['capacity_bytes']))
            storage += entry['flat_per_month'] * boxes * len(days) / float(length)
        uploads = sum(sim.uploads.get(d, 0) for d in dates)
        requests = uploads * UPLOADS_PER_BACKUP * get('put_per_1000') / 1000.0
        months.append({'month': '%04d-%02d' % (year, month), 'days': len(days),
                       'storage': round(storage, ROUND), 'early_deletion': round(early, ROUND),
                       'requests': round(requests, ROUND), 'total': round(storage + early + requests, ROUND)})
    year_total = sum(m['total'] for m in months)
    return {
        'name': entry.get('name'), 'currency': entry['currency'], 'source': entry.get('source'),
        'as_of': entry.get('as_of'), 'monthly': months, 'total': round(year_total, ROUND),
        'monthly_average': round(year_total / len(months), ROUND),
        'last_month': months[-1]['total'],
        'restore_newest': round(sim.newest_size / gb_bytes * (get('retrieval_per_gb') + get('egress_per_gb')), ROUND),
        'warnings': warnings,
    }


def estimate(policy, backup_size, providers=None, prices=None, start=None, days=365, interval_hours=24,
             growth_percent_per_month=0, timezone='UTC'):
    """Simulate ``policy`` and price it for each of ``providers`` (default: every table entry)."""
    table = price_table(prices)
    names = list(providers) if providers else sorted(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError('unknown provider(s) %s; known: %s (add one under prices)'
                          % (', '.join(unknown), ', '.join(sorted(table))))
    sim = simulate(policy, backup_size, start=start, days=days, interval_hours=interval_hours,
                   growth_percent_per_month=growth_percent_per_month, timezone=timezone)
    months = []
    for (year, month), entries in _months(sim).items():
        months.append({'month': '%04d-%02d' % (year, month), 'days': len(entries),
                       'stored_bytes_average': int(round(sum(s for d, s, k in entries) / float(len(entries)))),
                       'stored_bytes_max': max(s for d, s, k in entries), 'backups_kept': entries[-1][2]})
    return {
        'start': sim.days[0][0].isoformat(), 'days': len(sim.days), 'backup_size': int(backup_size),
        'interval_hours': int(interval_hours), 'growth_percent_per_month': growth_percent_per_month,
        'backups_made': sim.made, 'backups_kept': sim.days[-1][2], 'backups_kept_max': max(k for d, s, k in sim.days),
        'stored_bytes_end': sim.days[-1][1], 'stored_bytes_max': max(s for d, s, k in sim.days),
        'months': months,
        'providers': dict((name, price(sim, table[name])) for name in names),
    }
