# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telling someone when a backup did (not) happen: heartbeats, webhooks, Prometheus metrics.

A job's ``monitoring`` section::

    heartbeats:                       # healthchecks.io, UptimeRobot heartbeat, Cronitor...
      - url: https://hc-ping.com/UUID           # derives start (URL/start) and fail (URL/fail)
      - success: https://heartbeat.uptimerobot.com/KEY   # or explicit start / success / fail
    webhooks:
      - {url: https://hooks.slack.com/services/..., format: slack}   # or format: json
    pushgateway: {url: http://127.0.0.1:9091}
    textfile: {path: /var/lib/prometheus/node-exporter/offsite_backup_crm.prom}
    seed_names: true                  # also backup_timestamp, backup_total_size_bytes, mode label
    timeout: 10

A monitoring endpoint that is down never fails the backup: the problem is logged and the
run's result is unchanged. URLs may hold secrets (webhook tokens, ping keys), so messages
name the host of a URL only.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import re
import time
import uuid

from .errors import ConfigError

try:  # Python 3
    from http.client import HTTPConnection, HTTPSConnection
    from urllib.parse import quote, urlsplit
except ImportError:  # pragma: no cover - the engine runs on Python 3
    from httplib import HTTPConnection, HTTPSConnection
    from urllib import quote
    from urlparse import urlsplit

KEYS = ('heartbeats', 'webhooks', 'pushgateway', 'textfile', 'timeout', 'instance', 'seed_names')
HEARTBEAT_KEYS = ('url', 'start', 'success', 'fail')
WEBHOOK_KEYS = ('url', 'format', 'on')
PUSHGATEWAY_KEYS = ('url',)
TEXTFILE_KEYS = ('path',)
WEBHOOK_FORMATS = ('slack', 'json')
WEBHOOK_EVENTS = ('failure', 'success')
LOG_TAIL = 10000  # bytes of log sent with a fail ping (healthchecks.io keeps 100 kB)
# Every label is bounded: job and set (``source``) come from the job file, ``source_type`` from
# a fixed list, ``repository`` is the repository's stable name (Repository.series_name), never a
# backup id, so a year of nightly runs keeps the same series (docs/monitoring.md has the table)
METRICS_HELP = (
    ('backup_success', 'gauge', '1 if the last run of this backup set succeeded, else 0'),
    ('backup_last_success_timestamp_seconds', 'gauge', 'Unix time of the last successful run'),
    ('backup_duration_seconds', 'gauge', 'Duration of the last run of this backup set'),
    ('backup_size_bytes', 'gauge', 'Size of the last backup artifact (compressed)'),
    ('backup_upload_bytes', 'gauge', 'Bytes sent to each repository by the last run'),
    ('backup_upload_duration_seconds', 'gauge', 'Seconds the last run spent sending to each repository'),
)
# The names of the restic seed script's exporter (seed 001), written too with ``seed_names: true``
# so that its alert rules and dashboards keep working while a team migrates
# (docs/migrating-from-seed-scripts.md). Its backup_success carried the script's mode: here the set.
SEED_METRICS_HELP = (
    ('backup_timestamp', 'gauge', 'Unix time of the last successful run (seed script name)'),
    ('backup_total_size_bytes', 'gauge', 'Size of the last backup artifact (seed script name)'),
)


def _only(where, data, keys):
    if not isinstance(data, dict):
        raise ConfigError('%s must be a mapping' % where)
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError('%s has unknown key(s) %s' % (where, ', '.join(unknown)), 'known keys: %s' % ', '.join(keys))


def _url(where, value):
    if not isinstance(value, str) or urlsplit(value).scheme not in ('http', 'https') or not urlsplit(value).netloc:
        raise ConfigError('%s must be an http(s) URL' % where)


def validate(config, where='monitoring'):
    _only(where, config, KEYS)
    for index, beat in enumerate(config.get('heartbeats') or []):
        here = '%s.heartbeats[%d]' % (where, index)
        _only(here, beat, HEARTBEAT_KEYS)
        if not any(beat.get(k) for k in HEARTBEAT_KEYS):
            raise ConfigError('%s needs url (healthchecks style) or start / success / fail' % here)
        for key in HEARTBEAT_KEYS:
            if beat.get(key):
                _url('%s.%s' % (here, key), beat[key])
    for index, hook in enumerate(config.get('webhooks') or []):
        here = '%s.webhooks[%d]' % (where, index)
        _only(here, hook, WEBHOOK_KEYS)
        _url('%s.url' % here, hook.get('url'))
        if hook.get('format', 'slack') not in WEBHOOK_FORMATS:
            raise ConfigError('%s.format must be one of %s' % (here, ', '.join(WEBHOOK_FORMATS)))
        events = hook.get('on', ['failure'])
        if not isinstance(events, list) or set(events) - set(WEBHOOK_EVENTS):
            raise ConfigError('%s.on must be a list of %s' % (here, ', '.join(WEBHOOK_EVENTS)))
    if config.get('pushgateway'):
        _only('%s.pushgateway' % where, config['pushgateway'], PUSHGATEWAY_KEYS)
        _url('%s.pushgateway.url' % where, config['pushgateway'].get('url'))
    if config.get('textfile'):
        _only('%s.textfile' % where, config['textfile'], TEXTFILE_KEYS)
        path = config['textfile'].get('path')
        if not isinstance(path, str) or not os.path.isabs(path) or not path.endswith('.prom'):
            raise ConfigError('%s.textfile.path must be an absolute path ending in .prom' % where,
                              'node_exporter\'s textfile collector reads only *.prom files')
    if not isinstance(config.get('seed_names', False), bool):
        raise ConfigError('%s.seed_names must be true or false' % where)
    timeout = config.get('timeout', 10)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError('%s.timeout must be a positive number of seconds' % where)
    return config


def where_to(url):
    """A URL for messages: scheme and host only (paths carry tokens)."""
    parts = urlsplit(url)
    return '%s://%s' % (parts.scheme, parts.netloc)


def _escape(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _labels(**labels):
    return '{%s}' % ','.join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items()))


def render_metrics(job, results, now=None, previous=None, seed_names=False):
    """Prometheus text format for the run's SetResults. ``previous`` maps a set name to its
    last success timestamp from an earlier run, kept when this run failed. ``seed_names``
    adds the seed script's series."""
    now = time.time() if now is None else now
    previous = previous or {}
    helps = METRICS_HELP + (SEED_METRICS_HELP if seed_names else ())
    lines = {name: [] for name, kind, text in helps}
    for result in results:
        base = dict(job=job, source=result.name)
        if result.source_type:
            base['source_type'] = result.source_type
        lines['backup_success'].append((dict(base, mode=result.name) if seed_names else base,
                                        1 if result.succeeded else 0))
        last = now if result.succeeded else previous.get(result.name)
        if last is not None:
            lines['backup_last_success_timestamp_seconds'].append((base, int(last)))
            if seed_names:
                lines['backup_timestamp'].append((base, int(last)))
        if result.duration is not None:
            lines['backup_duration_seconds'].append((base, result.duration))
        if result.succeeded and result.backup and result.backup.get('size') is not None:
            lines['backup_size_bytes'].append((base, result.backup['size']))
            if seed_names:
                lines['backup_total_size_bytes'].append((base, result.backup['size']))
        for upload in result.uploads:
            labels = dict(base, repository=upload.get('repository') or upload.get('type'))
            lines['backup_upload_bytes'].append((labels, upload.get('bytes') or 0))
            if upload.get('duration') is not None:
                lines['backup_upload_duration_seconds'].append((labels, upload['duration']))
    out = []
    for name, kind, text in helps:
        if not lines[name]:
            continue
        out.append('# HELP %s %s' % (name, text))
        out.append('# TYPE %s %s' % (name, kind))
        out.extend('%s%s %s' % (name, _labels(**labels), value) for labels, value in lines[name])
    return '\n'.join(out) + '\n'


LAST_SUCCESS_RE = re.compile(r'^backup_last_success_timestamp_seconds\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def previous_successes(text):
    """{set name: timestamp} from an earlier metrics file."""
    found = {}
    for line in (text or '').splitlines():
        match = LAST_SUCCESS_RE.match(line.strip())
        if match:
            source = re.search(r'source="((?:[^"\\]|\\.)*)"', match.group('labels'))
            if source:
                found[source.group(1)] = float(match.group('value'))
    return found


# ``offsite-backup wal-push`` (one run per WAL segment, as the server's user): per repository the
# newest archiving and a failure counter that survives from one run to the next
WAL_METRICS_HELP = (
    ('backup_wal_last_archived_timestamp_seconds', 'gauge',
     'Unix time a WAL file of the set was last archived complete to the repository'),
    ('backup_wal_archive_failures_total', 'counter',
     'wal-push runs in which the repository did not take the WAL file (all runs since the metrics file began)'),
)
_SAMPLE_RE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_UNESCAPE_RE = re.compile(r'\\(.)')


def wal_metrics_path(config, job):
    """Where wal-push keeps its series (and so its counter): beside the runner's textfile,
    ``<name>-wal.prom`` (the runner rewrites its own file whole); without a textfile, a state
    file in the job's local directory (only pushed). None: no metrics configured."""
    textfile = (config or {}).get('textfile')
    if textfile:
        return '%s-wal.prom' % textfile['path'][:-len('.prom')]
    if (config or {}).get('pushgateway'):
        return os.path.join(job['local']['path'], '.%s-wal.prom' % job['name'])
    return None


def parse_samples(text):
    """{(name, sorted label items): value} of the samples in Prometheus text ``text``."""
    found = {}
    for line in (text or '').splitlines():
        match = _SAMPLE_RE.match(line.strip())
        if not match:
            continue
        labels = tuple(sorted((k, _UNESCAPE_RE.sub(lambda m: '\n' if m.group(1) == 'n' else m.group(1), v))
                              for k, v in _LABEL_RE.findall(match.group('labels'))))
        try:
            found[(match.group('name'), labels)] = float(match.group('value'))
        except ValueError:
            continue
    return found


def update_wal_samples(samples, job, set_name, outcomes, now):
    """``samples`` (parse_samples) after one wal-push: the archiving time of each repository that
    holds the file now, one more failure for each that does not; every failure series starts at 0
    so that ``increase()`` sees the first one."""
    for outcome in outcomes:
        if not outcome:
            continue
        labels = tuple(sorted(dict(job=job, source=set_name,
                                   repository=outcome.get('repository') or outcome.get('type') or 'unknown').items()))
        failures = ('backup_wal_archive_failures_total', labels)
        samples.setdefault(failures, 0)
        if outcome.get('status') == 'failed':
            samples[failures] += 1
        else:
            samples[('backup_wal_last_archived_timestamp_seconds', labels)] = int(now)
    return samples


def render_samples(samples, helps):
    out = []
    for name, kind, text in helps:
        mine = sorted((labels, value) for (n, labels), value in samples.items() if n == name)
        if not mine:
            continue
        out += ['# HELP %s %s' % (name, text), '# TYPE %s %s' % (name, kind)]
        out += ['%s%s %s' % (name, _labels(**dict(labels)), ('%d' % value) if value == int(value) else value)
                for labels, value in mine]
    return '\n'.join(out) + '\n' if out else ''


def _rewrite_wal_file(path, change):
    """Apply ``change`` to the samples of the WAL metrics file under an exclusive ``flock`` of
    ``<file>.lock`` (wal-push and wal-status each keep the other's series), written aside and
    renamed (node_exporter may read at any moment); the new text. A symlink (the client role
    links the collector's ``<name>-wal.prom`` to a directory only the server's user writes) is
    followed: the lock, the partial file and the rename are beside its target."""
    import fcntl
    path = os.path.realpath(path)
    with open(path + '.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as handle:
                samples = parse_samples(handle.read())
        except (IOError, OSError) as exc:
            if exc.errno != errno.ENOENT:
                raise
            samples = {}
        change(samples)
        text = render_samples(samples, WAL_FILE_HELP)
        partial = '%s.%d.tmp' % (path, os.getpid())
        with open(partial, 'w') as handle:
            handle.write(text)
        os.chmod(partial, 0o644)
        os.rename(partial, path)
    return text


def _record_wal(config, job, set_name, change, helps, host, logger, what):
    """Write ``change`` into the WAL metrics file and push this set's series of ``helps`` to the
    Pushgateway when one is configured. Never raises: a metrics problem is a warning."""
    path = wal_metrics_path(config, job)
    if path is None:
        return None
    try:
        text = _rewrite_wal_file(path, change)
    except (IOError, OSError) as exc:
        logger.warning('writing WAL metrics to %s failed (%s); %s'
                       % (path, exc.strerror or exc, what))
        return None
    gateway = (config or {}).get('pushgateway')
    if gateway:
        names = set(name for name, kind, text_ in helps)
        mine = dict((key, value) for key, value in parse_samples(text).items()
                    if ('source', set_name) in key[1] and key[0] in names)
        url = '%s/metrics/job/%s/instance/%s/source/%s' % (
            gateway['url'].rstrip('/'), quote(job['name'], safe=''), quote(host, safe=''), quote(set_name, safe=''))
        monitor = Monitor(dict(config, timeout=min(config.get('timeout', 10), 5)), job['name'], host, logger)
        monitor._send('WAL metrics push', url, render_samples(mine, helps), 'text/plain; version=0.0.4')
    return path


def record_wal_push(config, job, set_name, outcomes, host, logger, now=None):
    """After a wal-push: update its series in the metrics file under a lock (two pushes at once
    each add their own failure), written aside and renamed; push this set's series to the
    Pushgateway when one is configured. Never raises: a metrics problem is a warning, never a
    failed archive_command."""
    now = time.time() if now is None else now
    return _record_wal(config, job, set_name, lambda samples: update_wal_samples(samples, job['name'], set_name,
                                                                                 outcomes, now),
                       WAL_METRICS_HELP, host, logger, 'the WAL file is archived all the same')


# ``offsite-backup wal-status`` (scheduled by the client role as the server's user): what the
# cluster has written and not archived, so that WalArchiveStale tells an idle cluster (nothing
# to archive) from one whose WAL waits
WAL_STATUS_HELP = (
    ('backup_wal_unarchived_segments', 'gauge',
     'Completed WAL segments after the last archived one: written, switched and not archived'),
    ('backup_wal_unarchived_bytes', 'gauge',
     'Bytes of WAL written after the end of the last archived segment (the current segment included)'),
    ('backup_wal_status_timestamp_seconds', 'gauge',
     'Unix time wal-status last read the cluster'),
)
WAL_FILE_HELP = WAL_METRICS_HELP + WAL_STATUS_HELP
_WAL_NAME_RE = re.compile(r'^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial|\.[0-9A-F]{8}\.backup)?$')


def wal_backlog(current_lsn, last_archived, segment_size):
    """(bytes, segments) of WAL written and not archived: from the end of the segment
    ``last_archived`` names (pg_stat_archiver.last_archived_wal; a ``.backup`` or ``.partial``
    file counts as its segment) to ``current_lsn`` (pg_current_wal_lsn(), an int); segments are
    the completed ones, those PostgreSQL has switched away from and should have archived: an idle
    cluster's current segment, however little it holds, is not one. None when it cannot be told:
    nothing archived yet, or a timeline history file was the last one archived."""
    match = _WAL_NAME_RE.match(last_archived or '')
    if not match or not segment_size:
        return None
    number = int(match.group(2), 16) * (0x100000000 // segment_size) + int(match.group(3), 16)
    pending = max(0, current_lsn - (number + 1) * segment_size)
    return pending, pending // segment_size


def update_wal_status(samples, job, set_name, backlog, now):
    """``samples`` after one wal-status: its read time always; the backlog when it was told."""
    labels = tuple(sorted(dict(job=job, source=set_name).items()))
    samples[('backup_wal_status_timestamp_seconds', labels)] = int(now)
    for name in ('backup_wal_unarchived_bytes', 'backup_wal_unarchived_segments'):
        samples.pop((name, labels), None)
    if backlog is not None:
        samples[('backup_wal_unarchived_bytes', labels)] = backlog[0]
        samples[('backup_wal_unarchived_segments', labels)] = backlog[1]
    return samples


def record_wal_status(config, job, set_name, backlog, host, logger, now=None):
    """After a wal-status: its series in the WAL metrics file (and the Pushgateway)."""
    now = time.time() if now is None else now
    return _record_wal(config, job, set_name, lambda samples: update_wal_status(samples, job['name'], set_name,
                                                                                backlog, now),
                       WAL_STATUS_HELP, host, logger, 'the cluster was read all the same')


class Monitor(object):
    """Sends one run's signals; every failure to reach an endpoint is logged, never raised."""

    def __init__(self, config, job, host, logger):
        self.config = config or {}
        self.job = job
        self.host = host
        self.logger = logger
        self.timeout = self.config.get('timeout', 10)
        self.seed_names = bool(self.config.get('seed_names'))
        self.run_id = str(uuid.uuid4())
        self.problems = []

    def _send(self, what, url, body=None, content_type='text/plain; charset=utf-8'):
        data = body.encode('utf-8') if isinstance(body, str) else body
        parts = urlsplit(url)
        connection_class = HTTPSConnection if parts.scheme == 'https' else HTTPConnection
        headers = {'User-Agent': 'offsite-backup'}
        if data is not None:
            headers['Content-Type'] = content_type
        path = (parts.path or '/') + ('?' + parts.query if parts.query else '')
        try:
            connection = connection_class(parts.netloc, timeout=self.timeout)
            try:
                connection.request('POST' if data is not None else 'GET', path, body=data, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            finally:
                connection.close()
            if status >= 400:
                raise IOError(status)
            return True
        except Exception as exc:  # refused, timeouts, TLS, HTTP errors: all only logged
            reason = exc.args[0] if isinstance(exc, IOError) and exc.args and isinstance(exc.args[0], int) else exc
            problem = '%s to %s failed (%s); the backup result is not affected' % (what, where_to(url), reason)
            self.problems.append(problem)
            self.logger.warning(problem)
            return False

    def _beats(self, event):
        for beat in self.config.get('heartbeats') or []:
            url = beat.get(event)
            if not url and beat.get('url'):
                base = beat['url'].rstrip('/')
                url = base if event == 'success' else '%s/%s' % (base, event)
            if url:
                yield url

    def start(self):
        for url in self._beats('start'):
            self._send('start ping', _with_run_id(url, self.run_id))

    def finish(self, results, log_tail='', error=None):
        """Report the run: success or fail pings, webhooks, metrics."""
        ok = error is None and all(r.succeeded for r in results)
        event = 'success' if ok else 'fail'
        body = _summary_text(self.job, self.host, results, error)
        if not ok and log_tail:
            body = '%s\n\n--- log tail ---\n%s' % (body, log_tail[-LOG_TAIL:])
        for url in self._beats(event):
            self._send('%s ping' % event, _with_run_id(url, self.run_id), body[-LOG_TAIL * 2:])
        for hook in self.config.get('webhooks') or []:
            if ('success' if ok else 'failure') in hook.get('on', ['failure']):
                self._webhook(hook, ok, results, error)
        if self.config.get('pushgateway') or self.config.get('textfile'):
            self._metrics(results)
        return ok

    def _webhook(self, hook, ok, results, error):
        failed = [r for r in results if not r.succeeded]
        reason = str(error) if error is not None else '; '.join('%s: %s' % (r.name, r.error) for r in failed)
        if hook.get('format', 'slack') == 'slack':
            text = (':white_check_mark: backup job *%s* on %s succeeded' % (self.job, self.host) if ok else
                    ':x: backup job *%s* on %s FAILED: %s' % (self.job, self.host, reason))
            payload = {'text': text}
        else:
            payload = {'host': self.host, 'job': self.job, 'status': 'success' if ok else 'failure',
                       'error': None if ok else reason, 'sets': [r.as_dict() for r in results]}
        self._send('webhook', hook['url'], json.dumps(payload, sort_keys=True, default=str), 'application/json')

    def _metrics(self, results):
        gateway = self.config.get('pushgateway')
        if gateway:
            # one group per backup set, and POST (which replaces only the metrics it carries):
            # a failed set's push has no success timestamp, so the gateway keeps the last good
            # one and BackupStale keeps counting from it
            for result in results:
                url = '%s/metrics/job/%s/instance/%s/source/%s' % (
                    gateway['url'].rstrip('/'), quote(self.job, safe=''), quote(self.host, safe=''),
                    quote(result.name, safe=''))
                self._send('metrics push', url, render_metrics(self.job, [result], seed_names=self.seed_names),
                           'text/plain; version=0.0.4')
        textfile = self.config.get('textfile')
        if textfile:
            self._write_textfile(textfile['path'], results)

    def _write_textfile(self, path, results):
        try:
            try:
                with open(path) as handle:
                    previous = previous_successes(handle.read())
            except (IOError, OSError):
                previous = {}
            text = render_metrics(self.job, results, previous=previous, seed_names=self.seed_names)
            # node_exporter may read at any moment: write aside, then rename
            partial = '%s.%d.tmp' % (path, os.getpid())
            with open(partial, 'w') as handle:
                handle.write(text)
            os.chmod(partial, 0o644)
            os.rename(partial, path)
        except (IOError, OSError) as exc:
            problem = 'writing metrics to %s failed (%s); the backup result is not affected' % (
                path, exc.strerror or exc)
            self.problems.append(problem)
            self.logger.warning(problem)


def _with_run_id(url, run_id):
    """healthchecks.io pairs start and end pings by ``rid``; other services ignore it."""
    if 'hc-ping' not in url and '/ping/' not in url:
        return url
    return '%s%srid=%s' % (url, '&' if '?' in url else '?', run_id)


def _summary_text(job, host, results, error):
    lines = ['offsite-backup job %s on %s' % (job, host)]
    if error is not None:
        lines.append('error: %s' % error)
    for result in results:
        line = '%s: %s' % (result.name, result.status)
        if result.backup and result.backup.get('id'):
            line += ' (%s, %s bytes)' % (result.backup['id'], result.backup.get('size'))
        if result.error:
            line += ': %s' % result.error
        lines.append(line)
    return '\n'.join(lines)
