# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``offsite-backup drill JOB``: the DR drill without AWX or a controller, from the job file.

For every set of the job, as ``playbooks/dr_drill.yml`` does: the newest complete backup from the
first repository (in the job's order) that has one, restored into a scratch target (a database
``<name>_drill_<token>`` on the source's server, a directory under ``scratch_root``), never the
source; its verification queries; the scratch copy always dropped; the backup marked proven.
Then the same report (drill_report: JSON, Markdown, HTML with the history) and metrics.

The job file's optional ``drill`` section (defaults shown)::

    drill:
      report_dir: /var/lib/offsite-backup/drills
      scratch_root: /var/tmp
      rpo_seconds: 93600
      rto_seconds: 14400
      mark_proven: true
      pushgateway: {url: http://pushgateway:9091}
      queries:                       # per set: one value each, `expect` (text) or `min` (number)
        crm_db:
          - {name: users, sql: "SELECT count(*) FROM public.users", min: 1}
      point_in_time: random          # sets that replay an archive (postgresql_physical): or a time
      point_in_time_margin: 60       # seconds kept off the end of the recovery window
      restore_options:               # per set: restore options of its scratch target
        crm_cluster: {os_user: postgres, offsite_backup_command: /usr/local/bin/offsite-backup}

A set that replays an archive (point-in-time recovery) is restored into a scratch data directory
and server on a free port (``scratch_target``), to a moment of its recovery window
(window.choose_moment) with ``point_in_time``, else to the end of the archive; ``{point_in_time}``
in its queries is that moment. Its RPO achieved is now minus the newest archived WAL segment.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import time
import uuid

from . import drill_report
from . import manifest as mf
from . import operations
from . import window
from .commands import CommandLog
from .errors import BackupError, ConfigError
from .freshness import series_name
from .sources import open_source
from .sources.base import ReplaysArchive

KEYS = ('report_dir', 'scratch_root', 'rpo_seconds', 'rto_seconds', 'mark_proven', 'pushgateway', 'queries',
        'point_in_time', 'point_in_time_margin', 'restore_options')
DEFAULTS = {'report_dir': '/var/lib/offsite-backup/drills', 'scratch_root': '/var/tmp', 'rpo_seconds': 93600,
            'rto_seconds': 14400, 'mark_proven': True, 'point_in_time_margin': 60}
QUERY_KEYS = ('name', 'sql', 'expect', 'min')


def settings(job):
    """The job's ``drill`` section, checked, with defaults."""
    raw = job.get('drill') or {}
    if not isinstance(raw, dict):
        raise ConfigError('job.drill must be a mapping')
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError('job.drill has unknown key(s) %s' % ', '.join(unknown), 'known keys: %s' % ', '.join(KEYS))
    out = dict(DEFAULTS, **raw)
    names = set(e['name'] for e in job['sources'])
    for name, queries in (out.get('queries') or {}).items():
        if name not in names:
            raise ConfigError('job.drill.queries names %s, which is not a set of the job' % name,
                              'use one of: %s' % ', '.join(sorted(names)))
        for index, query in enumerate(queries or []):
            if not isinstance(query, dict) or not query.get('sql') or set(query) - set(QUERY_KEYS):
                raise ConfigError('job.drill.queries.%s[%d] needs sql (and name, expect or min only)' % (name, index))
    if out.get('point_in_time') not in (None, 'random'):
        mf.parse_time(out['point_in_time'])  # a time, or ConfigError
    margin = out['point_in_time_margin']
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise ConfigError('job.drill.point_in_time_margin must be a number of seconds (at least 0)')
    for name in out.get('restore_options') or {}:
        if name not in names:
            raise ConfigError('job.drill.restore_options names %s, which is not a set of the job' % name)
    if not os.path.isabs(out['report_dir']) or not os.path.isabs(out['scratch_root']):
        raise ConfigError('job.drill.report_dir and scratch_root must be absolute paths')
    return out


def judge(query, answered, error=None):
    """A check as the playbook's check_queries.yml records it."""
    expected = (str(query['expect']) if 'expect' in query else
                ('at least %s' % query['min']) if 'min' in query else 'an answer')
    ok = error is None
    if ok and 'expect' in query:
        ok = answered == str(query['expect'])
    if ok and 'min' in query:
        try:
            ok = float(answered) >= float(query['min'])
        except ValueError:
            ok = False
    got = answered if error is None else 'error: %s' % error
    return {'name': query.get('name') or query['sql'], 'ok': ok, 'query': query['sql'], 'expected': expected,
            'got': got, 'detail': 'answered %s, expected %s' % (got, expected)}


def newest(name, repositories, log):
    """(options, info) of the first repository holding a complete backup, and why the others
    before it were skipped."""
    skipped = []
    for options in repositories:
        where = series_name(options)
        try:
            found = operations.info(name, options, log=log)
        except BackupError as exc:
            skipped.append('%s: %s' % (where, exc))
            continue
        if found['latest']:
            return options, found, skipped
        skipped.append('%s: no complete backup' % where)
    return None, None, skipped


def drill_set(entry, repositories, config, log, logger=None):
    """Restore, check and drop one set; returns its outcome for drill_report."""
    started = time.time()
    name = entry['name']
    outcome = {'name': name, 'success': False, 'checks': [], 'rpo_seconds': config['rpo_seconds'],
               'rto_seconds': config['rto_seconds']}
    options, found, outcome['skipped_repositories'] = newest(name, repositories, log)
    if found is None:
        outcome['error'] = 'no reachable repository holds a complete backup of %s: %s' % (
            name, '; '.join(outcome['skipped_repositories']))
        return outcome
    outcome.update(backup_id=found['latest']['id'], repository=found['repository'])
    source = open_source(entry['source'], log)
    scratch_options = dict(source.scratch_target(uuid.uuid4().hex[:8], config['scratch_root']),
                           **((config.get('restore_options') or {}).get(name) or {}))
    backup, moment = found['latest']['id'], None
    try:
        if isinstance(source, ReplaysArchive) and config.get('point_in_time'):
            pit = found.get('recovery_window')
            moment = mf.format_time(window.choose_moment(pit, config['point_in_time'], config['point_in_time_margin']))
            scratch_options['recovery_target_time'] = moment
            backup = 'latest'  # the restore chooses the newest base backup that had ended by then
            outcome['point_in_time'] = {
                'target': moment, 'chosen': 'random' if config['point_in_time'] == 'random' else 'given',
                'window_start': pit['earliest'], 'window_end': pit['latest'], 'newest_wal': pit['newest_wal']}
    except BackupError as exc:
        outcome['error'] = str(exc)
        return outcome
    scratch = open_source(scratch_options, log)
    try:
        restore_started = time.time()
        restored = operations.restore(name, options, scratch_options, backup=backup, mode='create',
                                      mark_proven=config['mark_proven'], log=log)
        outcome.update(age_seconds=restored['age_seconds'], restore_seconds=restored['duration'],
                       backup_id=restored['backup']['id'])
        if moment:
            outcome['point_in_time'].update(reached=(restored.get('restored') or {}).get('reached_time'),
                                            phases=(restored.get('restored') or {}).get('phases'))
            outcome['age_seconds'] = round(time.time() - found['recovery_window']['latest_timestamp'], 3)
        for query in (config.get('queries') or {}).get(name) or []:
            sql = query['sql'].replace('{point_in_time}', moment or '')
            try:
                outcome['checks'].append(judge(dict(query, sql=sql), scratch.answer(sql)))
            except BackupError as exc:
                outcome['checks'].append(judge(dict(query, sql=sql), None, exc))
        outcome['recovery_seconds'] = round(time.time() - restore_started, 3)
        failed = [c['name'] for c in outcome['checks'] if not c['ok']]
        outcome['success'] = not failed
        if failed:
            outcome['error'] = 'verification failed: %s' % ', '.join(failed)
    except BackupError as exc:
        outcome['error'] = str(exc)
    finally:
        scratch.drop()
    outcome['duration_seconds'] = round(time.time() - started, 3)
    if logger:
        logger.info('drill of %s: %s', name, 'ok' if outcome['success'] else 'FAILED: %s' % outcome.get('error'))
    return outcome


def run(job, host, log=None, logger=None):
    """Drill every set of ``job``; writes the report and returns (report, paths, metrics text)."""
    log = log or CommandLog()
    config = settings(job)
    if not job['repositories']:
        raise ConfigError('job %s lists no repositories to drill from' % job['name'])
    started = mf.utcnow()
    results = [drill_set(entry, job['repositories'], config, log, logger) for entry in job['sources']]
    report = drill_report.build('drill', results, started, mf.utcnow(), host=host,
                                rpo_seconds=config['rpo_seconds'], rto_seconds=config['rto_seconds'])
    paths = drill_report.write(report, config['report_dir'])
    return report, paths, drill_report.metrics(report)
