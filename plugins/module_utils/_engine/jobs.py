# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled jobs: a job file says what to back up, where, how long to keep it, whom to tell.

A job run calls the engine operations the modules call, from the ``offsite-backup`` command
instead of from Ansible: there is no second implementation. Per backup set: ``backup`` (dump
into the local copy, streamed at the same time to every repository that takes a stream, the
others fed from the finished copy), local retention, offsite retention.

Job file (YAML)::

    name: crm                         # job name: lock, log file, monitoring labels
    local: {path: /var/backups/offsite, retention: {keep_last: 7}}
    sources:
      - name: crm_db                  # backup set name
        source: {type: postgresql, database: crm, host: 127.0.0.1, user: backup}
    repositories:
      - {type: s3, bucket: crm-backups, secret_key: '${S3_SECRET_KEY}'}
    retention: {keep_daily: 7, keep_weekly: 4, keep_monthly: 6}   # offsite
    clock_skew: 1h                    # backups dated further in the future are suspect
    incomplete_grace: 24              # hours before retention removes an unfinished upload
    signing: {key_file: /etc/offsite-backup/signing_key}          # see signing.py
    monitoring: {...}                 # see monitoring.py

``${NAME}`` in any string is replaced by the environment variable NAME: secrets live in the
root-only env file the client role writes, never in the job file.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import time

from . import manifest as mf
from .commands import CommandLog
from .encryption import DUMP_OPTIONS, Encryption, scheme_of
from .errors import BackupError, ConfigError, DependencyError, as_backup_error
from .pipeline import COMPRESSIONS
from .repositories import check_repository
from .retention import POLICY_KEYS
from .signing import Signer, Verifier, check_options as check_signing
from .sources import check_source

try:
    import yaml
except ImportError:
    yaml = None

DEFAULT_LOG_DIR = '/var/log/offsite-backup'
ENV_REF = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}')

# key -> (type, required); nested sections are checked by their own functions
TOP_KEYS = {
    'name': (str, True), 'sources': (list, True), 'local': (dict, True), 'repositories': (list, False),
    'retention': (dict, False), 'min_success': (int, False), 'compression': (str, False),
    'compression_level': (int, False), 'compression_threads': (int, False), 'tags': (list, False),
    'encryption': (dict, False), 'level': (int, False), 'threads': (int, False),  # level, threads: ALIASES
    'monitoring': (dict, False), 'log': (dict, False), 'timezone': (str, False), 'drill': (dict, False),
    'clock_skew': ((str, int), False), 'incomplete_grace': (int, False),
    'signing': (dict, False),
}
# older names still read: the job file now names options as the modules do (dump's compression_level)
ALIASES = {'level': 'compression_level', 'threads': 'compression_threads'}
LOCAL_KEYS = {'path': (str, True), 'retention': (dict, False)}
SOURCE_KEYS = {'name': (str, True), 'source': (dict, True), 'tags': (list, False)}
LOG_KEYS = {'path': (str, False), 'max_bytes': (int, False), 'backups': (int, False)}
TYPE_NAMES = {str: 'a string', list: 'a list', dict: 'a mapping', int: 'an integer',
              (str, int): 'a duration (1h, 90m, 2d or seconds)'}


def _check_keys(where, data, spec):
    if not isinstance(data, dict):
        raise ConfigError('%s must be a mapping' % where)
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise ConfigError('%s has unknown key(s) %s' % (where, ', '.join(unknown)),
                          'known keys: %s' % ', '.join(sorted(spec)))
    for key, (kind, required) in spec.items():
        value = data.get(key)
        if value is None:
            if required:
                raise ConfigError('%s needs %s' % (where, key))
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError('%s.%s must be %s, not %s' % (where, key, TYPE_NAMES[kind], type(value).__name__))


def _check_policy(where, policy):
    unknown = sorted(set(policy) - set(POLICY_KEYS))
    if unknown:
        raise ConfigError('%s has unknown retention rule(s) %s' % (where, ', '.join(unknown)),
                          'use: %s' % ', '.join(POLICY_KEYS))


def expand(value, environ, where):
    """Replace ``${NAME}`` by the environment variable NAME, recursively; a missing variable
    is an error naming the variable (its value is a secret and never appears)."""
    if isinstance(value, dict):
        return dict((k, expand(v, environ, '%s.%s' % (where, k))) for k, v in value.items())
    if isinstance(value, list):
        return [expand(v, environ, '%s[%d]' % (where, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(match):
        name = match.group(1)
        if name not in environ:
            raise ConfigError('%s refers to ${%s} but the environment has no %s' % (where, name, name),
                              'set it in the job\'s env file (offsite-backup run --env-file FILE)')
        return environ[name]
    return ENV_REF.sub(lookup, value)


def _resolve_aliases(where, data):
    data = dict(data)
    for old, new in ALIASES.items():
        if old in data:
            if new in data:
                raise ConfigError('%s sets both %s and %s' % (where, new, old), '%s is the older name of %s: keep one' % (old, new))
            data[new] = data.pop(old)
    return data


def _checked(here, check, *args):
    """Run a repository or source check; its message (the module's) gets the job's location."""
    try:
        check(*args)
    except ConfigError as exc:
        raise ConfigError('%s: %s' % (here, exc.message), exc.hint) from None


def validate(raw, where='job'):
    """Check a job's structure and return it with defaults filled in (no I/O)."""
    # the grace rule alone: operations (every use case) is imported where one runs, so that
    # wal-push, which validates a job once per WAL segment, starts without it
    from .usecases.retention import DEFAULT_GRACE_HOURS, check_grace
    if isinstance(raw, dict):
        raw = _resolve_aliases(where, raw)
    _check_keys(where, raw, TOP_KEYS)
    job = dict(raw)
    mf.validate_name(job['name'])
    _check_keys('%s.local' % where, job['local'], LOCAL_KEYS)
    if not os.path.isabs(job['local']['path']):
        raise ConfigError('%s.local.path must be an absolute path, not %r' % (where, job['local']['path']))
    if job['local'].get('retention'):
        _check_policy('%s.local.retention' % where, job['local']['retention'])
    if job.get('retention'):
        _check_policy('%s.retention' % where, job['retention'])
    if not job['sources']:
        raise ConfigError('%s.sources is empty' % where, 'list at least one source to back up')
    names = set()
    for index, entry in enumerate(job['sources']):
        here = '%s.sources[%d]' % (where, index)
        _check_keys(here, entry, SOURCE_KEYS)
        mf.validate_name(entry['name'])
        if entry['name'] in names:
            raise ConfigError('%s: backup set name %s is used twice' % (here, entry['name']))
        names.add(entry['name'])
        if not entry['source'].get('type'):
            raise ConfigError('%s.source needs type' % here)
        _checked('%s.source' % here, check_source, entry['source'], 'dump')
    job['repositories'] = job.get('repositories') or []
    for index, repo in enumerate(job['repositories']):
        if not isinstance(repo, dict) or not repo.get('type'):
            raise ConfigError('%s.repositories[%d] needs type' % (where, index))
        _checked('%s.repositories[%d]' % (where, index), check_repository, repo)
    count = len(job['repositories'])
    min_success = job.get('min_success')
    if min_success is not None and not (1 <= min_success <= max(count, 1)):
        raise ConfigError('%s.min_success is %s but %d repositories are listed' % (where, min_success, count))
    if job.get('retention') and not count:
        raise ConfigError('%s.retention is set but there are no repositories' % where)
    job.setdefault('compression', 'zstd')
    if job['compression'] not in COMPRESSIONS:
        raise ConfigError('%s.compression %r is not known' % (where, job['compression']),
                          'use one of: %s' % ', '.join(COMPRESSIONS))
    if job.get('encryption'):
        # checked before the first dump: a typo must not leave a night of unencrypted backups
        # identity_file: the private key wal-fetch decrypts with (docs/pitr.md); dumps ignore it
        _check_keys('%s.encryption' % where, job['encryption'],
                    dict((key, (kind, False)) for key, kind in dict(DUMP_OPTIONS, identity_file=str).items()))
        if scheme_of(job['encryption']) is None:
            raise ConfigError('%s.encryption names no key to encrypt with' % where,
                              'give recipients / recipients_file (age), gpg_recipients or passphrase')
        Encryption(job['encryption'], CommandLog()).describe()
    if job.get('signing'):
        # the key is proven usable before the first dump, like the encryption keys above
        check_signing(job['signing'], '%s.signing' % where)
        Signer(job['signing'], CommandLog())
        Verifier(job['signing'], CommandLog())
    _check_keys('%s.log' % where, job.get('log') or {}, LOG_KEYS)
    log = dict(job.get('log') or {})
    log.setdefault('path', os.path.join(DEFAULT_LOG_DIR, job['name'] + '.log'))
    log.setdefault('max_bytes', 10 * 2 ** 20)
    log.setdefault('backups', 5)
    job['log'] = log
    job['monitoring'] = job.get('monitoring') or {}
    from .monitoring import validate as validate_monitoring  # monitoring imports nothing from here
    validate_monitoring(job['monitoring'], '%s.monitoring' % where)
    job.setdefault('timezone', 'UTC')
    job.setdefault('incomplete_grace', DEFAULT_GRACE_HOURS)
    try:
        mf.clock_skew(job.get('clock_skew'))
        check_grace(job['incomplete_grace'])
    except ConfigError as exc:
        raise ConfigError('%s.%s' % (where, exc.message), exc.hint) from None
    return job


def load(path, environ=None):
    """Read, expand and validate the job file at ``path``."""
    if yaml is None:
        raise DependencyError('the Python library PyYAML is missing (needed to read job files)',
                              'pip install pyyaml into the runner\'s virtualenv')
    environ = os.environ if environ is None else environ
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read job file %s: %s' % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        raise ConfigError('job file %s is not valid YAML: %s' % (path, exc))
    if raw is None:
        raise ConfigError('job file %s is empty' % path)
    return validate(expand(raw, environ, 'job'), where='job %s' % path)


def read_env_file(path):
    """KEY=VALUE lines (``#`` comments, optional quotes, optional ``export``), as systemd's
    EnvironmentFile and the seeds' .env files write them."""
    values = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read env file %s: %s' % (path, exc.strerror or exc))
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('export '):
            line = line[len('export '):].lstrip()
        key, sep, value = line.partition('=')
        key = key.strip()
        if not sep or not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', key):
            raise ConfigError('env file %s line %d is not KEY=VALUE' % (path, number))
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        values[key] = value
    return values


def local_repository(job):
    """The local copy seen as a repository: dump writes <path>/<name>/<id>.<ext> like one."""
    return {'type': 'local', 'path': job['local']['path']}


class SetResult(object):
    """What happened to one backup set in a run, for the summary and the metrics."""

    def __init__(self, name, source_type=None):
        self.name = name
        self.source_type = source_type
        self.status = 'pending'
        self.error = None
        self.error_kind = None
        self.backup = None
        self.uploads = []
        self.retention = {}
        self.started = time.time()
        self.duration = None

    def finish(self, status, error=None):
        self.status = status
        if error is not None:
            self.error = str(error)
            self.error_kind = getattr(error, 'kind', 'internal')
        self.duration = round(time.time() - self.started, 3)

    @property
    def succeeded(self):
        return self.status in ('succeeded', 'would succeed')

    def as_dict(self):
        data = {'name': self.name, 'status': self.status, 'duration': self.duration,
                'backup': self.backup, 'repositories': self.uploads, 'retention': self.retention}
        if self.error:
            data.update(error=self.error, error_kind=self.error_kind)
        return data


def run(job, dry_run=False, log=None, logger=None):
    """Run every source of ``job``; one failing source does not stop the others.

    Returns a list of SetResult. The caller holds the job lock and reports to monitoring."""
    log = log or CommandLog()
    results = []
    for entry in job['sources']:
        result = SetResult(entry['name'], entry['source'].get('type'))
        results.append(result)
        try:
            _run_set(job, entry, result, dry_run, log, logger)
        except BackupError as exc:
            result.finish('failed', exc)
        except Exception as exc:  # an OSError (config, io, disk_full) or a bug: reported per set
            error = as_backup_error(exc, 'backing up %s' % entry['name'])
            result.finish('failed', error)
            if logger and error.kind == 'internal':
                logger.exception('backup set %s: unexpected error', entry['name'])
        if logger:
            if result.succeeded:
                logger.info('backup set %s: %s in %.1fs', result.name, result.status, result.duration)
            else:
                logger.error('backup set %s: failed: %s', result.name, result.error)
    return results


def _note(logger, message, *args):
    if logger:
        logger.info(message, *args)


def _run_set(job, entry, result, dry_run, log, logger):
    from . import operations
    name = entry['name']
    tags = list(job.get('tags') or []) + list(entry.get('tags') or [])
    local = job['local']
    _note(logger, 'backup set %s: dumping %s', name, entry['source'].get('type'))
    options = dict(compression=job['compression'], level=job.get('compression_level'), tags=tags,
                   threads=job.get('compression_threads'), encryption=job.get('encryption'),
                   signing=job.get('signing'), log=log)
    if dry_run or not job['repositories']:
        backup = operations.dump(name, entry['source'], local['path'], check_mode=dry_run, **options)['backup']
    else:
        # one pass: every repository that can reads the artifact while it is written
        try:
            done = operations.backup(name, entry['source'], local['path'], job['repositories'],
                                     min_success=job.get('min_success'), **options)
        except BackupError as exc:
            if 'backup' in (exc.details or {}):  # the local copy is complete; an upload failed
                result.backup = _summary(exc.details['backup'])
                result.uploads = exc.details.get('repositories') or []
            raise
        backup, uploaded = done['backup'], done['upload']
        result.uploads = uploaded['repositories']
        for warning in done.get('warnings', []) + uploaded.get('warnings', []):
            if logger:
                logger.warning('backup set %s: %s', name, warning)
    result.backup = _summary(backup)
    if not dry_run:
        _note(logger, 'backup set %s: %s written (%s bytes)', name, backup['path'], backup['size'])
        if result.uploads:
            _note(logger, 'backup set %s: uploaded to %s', name,
                  ', '.join('%s (%s)' % (r.get('location') or r['type'], r['status']) for r in result.uploads))
    if local.get('retention'):
        if dry_run and not os.path.isdir(local['path']):
            # a dry run creates nothing: a local copy not made yet holds nothing to remove
            result.retention['local'] = {'location': local['path'], 'would_remove': []}
        else:
            result.retention['local'] = _retention(name, local_repository(job), local['retention'], job, dry_run,
                                                   log, logger)
    if job['repositories']:
        if dry_run:
            # nothing to upload yet: prove every repository is reachable with these credentials
            for repo in job['repositories']:
                listed = operations.info(name, repo, log=log)
                result.uploads.append({'type': repo['type'], 'location': listed['location'],
                                       'repository': listed['repository'],
                                       'status': 'would upload', 'bytes': 0})
        if job.get('retention'):
            for index, repo in enumerate(job['repositories']):
                result.retention['repository %d' % index] = _retention(name, repo, job['retention'], job,
                                                                       dry_run, log, logger)
    result.finish('would succeed' if dry_run else 'succeeded')


def _summary(backup):
    return dict((k, backup.get(k)) for k in ('id', 'path', 'size', 'raw_size', 'sha256', 'duration'))


def _retention(name, repository, policy, job, dry_run, log, logger):
    from . import operations
    outcome = operations.retention(name, repository, policy, timezone=job['timezone'],
                                   incomplete_grace=job['incomplete_grace'], clock_skew=job.get('clock_skew'),
                                   check_mode=dry_run, signing=trusted_keys(job), log=log)
    for warning in outcome.get('warnings', []):
        if logger:
            logger.warning('backup set %s: %s', name, warning)
    key = 'would_remove' if dry_run else 'removed'
    done = {'location': outcome['location'], key: list(outcome['remove']), 'suspect': outcome['suspect']}
    if outcome.get('unauthentic'):
        done['unauthentic'] = outcome['unauthentic']
    if outcome.get('wal'):
        done['wal'] = {key: len(outcome['wal']['remove']), 'kept': outcome['wal']['kept'],
                       'oldest_needed': outcome['wal']['oldest_needed']}
    return done


def trusted_keys(job):
    """The job's ``signing`` without the signing key: what retention and list check against
    (None when it trusts no key; the job's own key is not trusted implicitly)."""
    trusted = dict((k, v) for k, v in (job.get('signing') or {}).items() if k != 'key_file' and v)
    return trusted or None


def listing(job, log=None, windows=None):
    """Every backup of every set in the local copy and each repository, for ``list``; with
    ``windows`` (a list), the recovery window of each set of base backups with archived WAL
    in each place is appended to it (``set``, ``repository`` and backup_info's ``recovery_window``)."""
    from . import operations
    rows = []
    places = [('local', local_repository(job))] + [('%s #%d' % (r['type'], i), r)
                                                   for i, r in enumerate(job['repositories'])]
    for entry in job['sources']:
        for label, repo in places:
            try:
                found = operations.info(entry['name'], repo, clock_skew=job.get('clock_skew'),
                                        signing=trusted_keys(job), log=log)
            except BackupError as exc:
                rows.append({'set': entry['name'], 'repository': label, 'error': str(exc)})
                continue
            for backup in found['backups']:
                rows.append(dict(backup, set=entry['name'], repository=label, location=found['location'],
                                 verify=repo.get('verify', 'full')))
            window = found.get('recovery_window')
            if windows is not None and window and window['files']:
                windows.append(dict(window, set=entry['name'], repository=label))
    return rows
