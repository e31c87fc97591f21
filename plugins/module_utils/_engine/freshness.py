# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``offsite-backup monitor``: what actually landed in each repository, seen from the outside.

The runner's own metrics come from the client that made the backup: when its cron line is
deleted, its host is gone or someone empties the bucket, it says nothing. This reads every
repository of a job file, as ``backup_info`` does, from a monitoring host, and exports per set
and repository (labels ``job``, ``source``, ``repository``: all bounded, docs/monitoring.md):

- ``backup_repository_up``: 1 when the repository could be listed;
- ``backup_repository_backups`` and ``backup_repository_stored_bytes``: complete backups and
  every byte the set occupies there (incomplete uploads and leftovers included);
- ``backup_repository_newest_timestamp_seconds`` / ``backup_repository_newest_age_seconds``: the
  newest complete backup that is not suspect;
- ``backup_repository_newest_proven_age_seconds``: the newest backup a drill restored;
- ``backup_repository_incomplete``: backups without a valid manifest, and leftovers;
- ``backup_repository_suspect``: backups dated in the future (the clock of their maker);
- ``backup_repository_verify_success``: a sampled ``verify`` (``read_data``) passed.

Metrics are built with prometheus_client (optional: only this command needs it).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from . import manifest as mf
from . import operations
from . import verify as verifying
from .commands import CommandLog
from .errors import BackupError, DependencyError
from .repositories import open_repository

FAMILIES = (
    ('backup_repository_up', '1 if the repository could be listed, else 0'),
    ('backup_repository_backups', 'Complete backups of the set in the repository'),
    ('backup_repository_stored_bytes', 'Bytes the set occupies in the repository (with incomplete uploads)'),
    ('backup_repository_newest_timestamp_seconds', 'Creation time of the newest complete, not suspect backup'),
    ('backup_repository_newest_age_seconds', 'Age of the newest complete, not suspect backup'),
    ('backup_repository_newest_proven_age_seconds', 'Age of the newest backup that a drill restored'),
    ('backup_repository_incomplete', 'Incomplete or damaged backups and leftovers of the set'),
    ('backup_repository_suspect', 'Backups dated in the future (the clock of the machine that made them)'),
    ('backup_repository_verify_success', '1 if the sampled verify of the set in the repository passed, else 0'),
)
LAST_RUN = ('backup_monitor_last_run_timestamp_seconds', 'When offsite-backup monitor last read the repositories')


def prometheus():
    try:
        import prometheus_client
        from prometheus_client.core import GaugeMetricFamily
    except ImportError:
        raise DependencyError('the Python library prometheus_client is missing (offsite-backup monitor needs it)',
                              'pip install prometheus_client==0.26.0 into the runner\'s virtualenv '
                              '(the client role does it with client_monitor: true)')
    return prometheus_client, GaugeMetricFamily


def series_name(options):
    """The repository's metrics label, also when it cannot be opened (a bad option)."""
    try:
        return open_repository(options).series_name()
    except BackupError:
        return options.get('name') or options.get('type') or 'unknown'


def observe(name, options, read_data='1', now=None, log=None):
    """One set in one repository: a dict of metric name -> value (absent: unknown)."""
    now = now or mf.utcnow()
    log = log or CommandLog()
    seen = {}
    try:
        found = operations.info(name, options, log=log)
    except BackupError as exc:
        return {'backup_repository_up': 0}, str(exc)
    backups = found['backups']
    trusted = [b for b in backups if b['complete'] and not b.get('suspect')]
    proven = [b for b in trusted if b.get('proven')]
    seen['backup_repository_up'] = 1
    seen['backup_repository_backups'] = len([b for b in backups if b['complete']])
    seen['backup_repository_stored_bytes'] = found['stored_bytes']['total']
    seen['backup_repository_incomplete'] = len([b for b in backups if not b['complete']]) + (
        1 if found['stored_bytes'].get('leftovers') else 0)
    seen['backup_repository_suspect'] = len([b for b in backups if b.get('suspect')])
    if trusted:
        newest = max(mf.parse_time(b['created']) for b in trusted)
        seen['backup_repository_newest_timestamp_seconds'] = newest.timestamp()
        seen['backup_repository_newest_age_seconds'] = (now - newest).total_seconds()
    if proven:
        seen['backup_repository_newest_proven_age_seconds'] = (
            now - max(mf.parse_time(b['created']) for b in proven)).total_seconds()
    problem = None
    try:
        verifying.verify(name, [options], read_data=read_data, now=now, log=log)
        seen['backup_repository_verify_success'] = 1
    except BackupError as exc:
        seen['backup_repository_verify_success'] = 0
        problem = str(exc)
    return seen, problem


def collect(job, read_data='1', now=None, logger=None):
    """Every set of ``job`` in every repository: prometheus_client metric families."""
    prom, family_class = prometheus()
    now = now or mf.utcnow()
    families = dict((metric, family_class(metric, text, labels=['job', 'source', 'repository']))
                    for metric, text in FAMILIES)
    for entry in job['sources']:
        for options in job['repositories']:
            repository = series_name(options)
            values, problem = observe(entry['name'], options, read_data=read_data, now=now)
            if problem and logger:
                logger.warning('%s in %s: %s', entry['name'], repository, problem)
            for metric, value in values.items():
                families[metric].add_metric([job['name'], entry['name'], repository], value)
    last = family_class(LAST_RUN[0], LAST_RUN[1], labels=['job'])
    last.add_metric([job['name']], now.timestamp())
    return [families[metric] for metric, text in FAMILIES] + [last]


class Snapshot(object):
    """A prometheus_client collector serving the families of the last ``collect``."""

    def __init__(self):
        self.families = []

    def collect(self):
        return list(self.families)


def registry_with(families):
    prom, family_class = prometheus()
    snapshot = Snapshot()
    snapshot.families = families
    registry = prom.CollectorRegistry()
    registry.register(snapshot)
    return registry, snapshot
