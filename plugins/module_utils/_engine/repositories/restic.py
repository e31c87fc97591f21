# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A restic repository (any backend restic speaks: a directory, sftp:, s3:, b2:, gs:, rest:).

Every object is one snapshot made with ``restic backup --stdin``: the key is the snapshot's
path (``--stdin-filename <key>`` gives ``/<key>``), so keys survive without any index of
ours, and ``restic snapshots`` is the listing. Tags make the snapshots readable with restic
alone: ``offsite.backup``, ``set:<name>``, ``id:<backup id>``, ``size:<bytes>`` (what restic
reported it read, proven equal to what was sent) and, on a manifest, ``source:<type>``.
The snapshot time is the backup's creation time, so ``restic forget --keep-*`` by hand sees
the same dates as our retention.

The password and the repository URL reach restic through the environment
(``RESTIC_PASSWORD`` / ``RESTIC_PASSWORD_FILE``, ``RESTIC_REPOSITORY``), never argv.
``delete`` forgets snapshots at once (the manifest-first order of retention holds); the
space is reclaimed by ONE ``restic prune`` when the repository is closed.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import datetime
import json
import os
import re
import subprocess
import tempfile

from .. import manifest as mf
from ..commands import killed_by, run, stderr_tail, streaming, which
from ..errors import ConfigError, IntegrityError, LockedError, NotFoundError, RepositoryError, UnreachableError
from ..pipeline import CHUNK, hash_stream, read_full
from ..schema import Option
from .base import AWS_CREDENTIALS, B2_CREDENTIALS, ObjectInfo, PutResult, Repository, SelfCheckingStore, checked_key

TAG = 'offsite.backup'
# restic's own words for the failures an operator can fix
_WRONG_PASSWORD = 'wrong password or no key found'
_NO_REPOSITORY = ('Is there a repository at the following location', 'unable to open config file')
_LOCKED = 'repository is already locked'
_DAMAGED = ('repository contains errors', 'Pack ID does not match', 'ciphertext verification failed')
_SUBSET_RE = re.compile(r'^(\d{1,3}(\.\d+)?%|\d+/\d+|\d+(\.\d+)?[KMGT]?)$')
# the options whose values are backend credentials, and the variables restic reads them from
_BACKEND_ENV = (('access_key', 'AWS_ACCESS_KEY_ID'), ('secret_key', 'AWS_SECRET_ACCESS_KEY'),
                ('session_token', 'AWS_SESSION_TOKEN'), ('region', 'AWS_DEFAULT_REGION'),
                ('key_id', 'B2_ACCOUNT_ID'), ('application_key', 'B2_ACCOUNT_KEY'))


class ResticRepository(SelfCheckingStore, Repository):
    type = 'restic'
    DESCRIPTION = ('C(restic) is a restic repository on any backend restic supports (a directory, C(sftp:), '
                   'C(s3:), C(b2:), C(gs:), C(rest:)); each object is one restic snapshot.',)
    OPTIONS = (
        Option('restic_repository', required=True, no_log=False, description=[
            'The restic repository, in restic\'s own syntax (what C(RESTIC_REPOSITORY) holds), for '
            'example C(/srv/restic), C(sftp:backup@host:/srv/restic) or C(s3:https://s3.amazonaws.com/bucket/restic).',
            'It reaches restic through the environment, never the command line.']),
        Option('restic_password', secret=True, env='RESTIC_PASSWORD', description=[
            'The password of the restic repository, passed as C(RESTIC_PASSWORD).',
            'One of O(.restic_password) and O(.restic_password_file) is required.']),
        Option('restic_password_file', 'path', no_log=False, description=[
            'A file (mode 0600) holding the restic repository\'s password, passed as C(RESTIC_PASSWORD_FILE).']),
        # its values are secrets: scrubbed by secrets() below, no_log in the module
        Option('restic_env', 'dict', no_log=True, description=[
            'Extra environment variables for restic\'s backend, for example C(AWS_ACCESS_KEY_ID), '
            'C(B2_ACCOUNT_KEY), C(GOOGLE_APPLICATION_CREDENTIALS) or C(RESTIC_CACHE_DIR). Values are secrets.',
            'O(.access_key), O(.secret_key), O(.session_token) and O(.region) are passed as '
            'the matching C(AWS_*) variables, O(.key_id) and O(.application_key) as C(B2_ACCOUNT_ID) and '
            'C(B2_ACCOUNT_KEY); O(.restic_env) wins over them.']),
        Option('restic_init', 'bool', description=[
            'Create the restic repository (C(restic init)) on the first write if it does not exist.',
            'Without it a missing repository is an error. Reads and check mode never create it.',
            'Defaults to C(false).']),
    ) + AWS_CREDENTIALS + B2_CREDENTIALS

    def __init__(self, options, log=None):
        super(ResticRepository, self).__init__(options, log)
        self.url = self.options['restic_repository']
        if not self.options.get('restic_password') and not self.options.get('restic_password_file'):
            raise ConfigError('restic repository %s has neither restic_password nor restic_password_file'
                              % self.location(),
                              'set one of them (restic encrypts everything with that password)')
        if self.options.get('restic_password') and self.options.get('restic_password_file'):
            raise ConfigError('restic repository %s has both restic_password and restic_password_file'
                              % self.location(), 'set only one of them')
        password_file = self.options.get('restic_password_file')
        if password_file and not os.path.isfile(os.path.expanduser(password_file)):
            raise ConfigError('restic_password_file %s does not exist' % password_file)
        env = self.options.get('restic_env') or {}
        if not isinstance(env, dict):
            raise ConfigError('restic_env must be a dict of environment variables')
        self._env = self._environment(env)
        self._restic = None
        self._exists = None
        self._snapshots = None
        self._pending_prune = False

    # -- plumbing -----------------------------------------------------------------------
    def location(self, key=''):
        # rest:https://user:secret@host/ must not show its secret
        url = re.sub(r'(://[^/:@]+):[^/@]*@', r'\1:***@', self.url)
        return '%s:/%s' % (url, key) if key else url

    def longest_wait(self):
        """The first look into the repository (restic cat config) may take ``timeout`` per try."""
        return self.timeout * (self.retries + 1)

    def secrets(self):
        found = super(ResticRepository, self).secrets()
        env = self.options.get('restic_env')
        return found + [str(v) for v in (env.values() if isinstance(env, dict) else ()) if v]

    def _environment(self, extra):
        env = {'RESTIC_REPOSITORY': self.url, 'TZ': 'UTC',
               # a password inherited from the controller must never override ours
               'RESTIC_PASSWORD': '', 'RESTIC_PASSWORD_FILE': '', 'RESTIC_PASSWORD_COMMAND': ''}
        if self.options.get('restic_password'):
            env['RESTIC_PASSWORD'] = self.options['restic_password']
        else:
            env['RESTIC_PASSWORD_FILE'] = os.path.expanduser(self.options['restic_password_file'])
        for option, variable in _BACKEND_ENV:
            if self.options.get(option):
                env[variable] = self.options[option]
        env.update(dict((str(k), str(v)) for k, v in extra.items() if v is not None))
        return env

    def _argv(self, *args):
        if self._restic is None:
            self._restic = which('restic', 'for restic repositories (Debian: apt-get install restic)')
        return [self._restic] + list(args)

    def _fail(self, doing, rc, stderr, key=''):
        """Turn restic's exit status and stderr into the error an operator can act on."""
        text = self._scrub(stderr.strip())
        where = self.location(key)
        if _WRONG_PASSWORD in text:
            raise RepositoryError('restic repository %s: wrong password (restic: %s)' % (self.location(), _WRONG_PASSWORD),
                                  'fix restic_password / restic_password_file; nothing was read, written or restored')
        if any(marker in text for marker in _NO_REPOSITORY):
            raise NotFoundError('there is no restic repository at %s' % self.location(),
                                'create it with restic init, set restic_init: true, or fix restic_repository')
        if _LOCKED in text:
            raise LockedError('restic repository %s is locked by another restic process' % self.location(),
                              'wait for it; if no restic runs any more, remove the stale lock with restic unlock')
        signal = killed_by(rc)
        detail = text[-1500:] or ('killed by %s' % signal if signal else 'exit status %s, no error output' % rc)
        raise RepositoryError('restic failed while %s %s: %s' % (doing, where, detail))

    def _scrub(self, text):
        for secret in self.secrets():
            if secret and len(secret) > 3:
                text = text.replace(secret, '***')
        return text

    def _run(self, doing, *args):
        rc, out, err = run(self._argv(*args), self.log, env=self._env)
        if rc != 0:
            self._fail(doing, rc, err)
        return out

    def _ensure(self, create):
        """Does the repository exist? With ``create`` (a write) and ``restic_init``, make it."""
        if self._exists is None:
            # the first call of every operation: a backend that never answers fails here, in
            # bounded time (restic itself retries a silent backend for many minutes)
            try:
                rc, out, err = run(self._argv('cat', 'config', '--no-lock'), self.log, env=self._env,
                                   timeout=self.longest_wait())
            except subprocess.TimeoutExpired:
                raise UnreachableError('restic repository %s did not answer within %d s'
                                       % (self.location(), self.longest_wait()),
                                       'check restic_repository and the network; ' + self.unreachable_hint())
            if rc == 0:
                self._exists = True
            elif any(marker in err for marker in _NO_REPOSITORY):
                self._exists = False
            else:
                self._fail('opening', rc, err)
        if not self._exists:
            if not self.options.get('restic_init'):
                raise NotFoundError('there is no restic repository at %s' % self.location(),
                                    'create it with restic init, set restic_init: true, or fix restic_repository')
            if create:
                self._run('creating', 'init')
                self._exists = True
        return self._exists

    def _snapshot_list(self):
        """Our snapshots, oldest first (read once per connection; writes update it)."""
        if self._snapshots is None:
            if not self._ensure(create=False):
                self._snapshots = []  # restic_init and no repository yet: empty, created on first write
            else:
                out = self._run('listing', 'snapshots', '--json', '--no-lock', '--tag', TAG)
                try:
                    found = json.loads(out or '[]') or []
                except ValueError:
                    raise RepositoryError('restic snapshots --json printed something that is not JSON for %s'
                                          % self.location())
                self._snapshots = sorted((s for s in found if s.get('paths')), key=lambda s: s.get('time', ''))
        return self._snapshots

    def _of(self, key):
        return [s for s in self._snapshot_list() if snapshot_key(s) == key]

    # -- the five verbs -----------------------------------------------------------------
    def put(self, key, reader, size, sha256):
        name, backup_id = checked_key(key).split('/')[0], mf.id_from_key(key)
        self._ensure(create=True)
        tags = [TAG, 'set:%s' % name, 'id:%s' % backup_id, 'size:%d' % size]
        tags += extra_tags(key, reader)
        args = ['backup', '--json', '--quiet', '--stdin', '--stdin-filename', key]
        for tag in tags:
            args += ['--tag', tag]
        parsed = mf.parse_id(backup_id)
        if parsed:  # the snapshot carries the backup's date: restic forget by hand agrees with us
            args += ['--time', parsed[1].strftime('%Y-%m-%d %H:%M:%S')]
        with tempfile.TemporaryFile() as out:
            with streaming(self._argv(*args), self.log, env=self._env,
                           stdin=subprocess.PIPE, stdout=out) as proc:
                sent = 0
                try:
                    while sent < size:
                        data = read_full(reader, min(CHUNK, size - sent))
                        if not data:
                            break
                        proc.stdin.write(data)
                        sent += len(data)
                    proc.stdin.close()
                except (BrokenPipeError, ValueError):
                    pass  # restic stopped reading: its exit status and stderr say why
                rc = proc.wait()
                if rc != 0:
                    self._fail('uploading', rc, stderr_tail(proc), key)
            out.seek(0)
            summary = _summary(out.read().decode('utf-8', 'replace'))
        snapshot = summary.get('snapshot_id')
        if not snapshot:
            raise RepositoryError('restic backup of %s reported no snapshot id' % self.location(key))
        try:
            self.check_landed(key, size, sha256, summary.get('total_bytes_processed'))
            self.check_landed(key, size, sha256, sent)
            if self.verify == 'full':
                with self._dump(snapshot, key) as landed:
                    self.check_landed(key, size, sha256, *hash_stream(landed))
        except BaseException:
            self._forget([snapshot])  # never leave an unproven snapshot that looks like the object
            raise
        self._snapshots = None
        return PutResult(key, size, sha256, 'restic dump sha256 re-read' if self.verify == 'full' else 'size')

    @contextlib.contextmanager
    def _dump(self, snapshot, key):
        with streaming(self._argv('dump', '--no-lock', snapshot, '/' + checked_key(key)), self.log, env=self._env) as proc:
            yield proc.stdout
            # the reader is done: a restic that failed midway must not pass for a short object
            rest = proc.stdout.read(1)
            rc = proc.wait()
            if rc != 0:
                self._fail('reading', rc, stderr_tail(proc), key)
            if rest:
                raise IntegrityError('%s holds more bytes than were read' % self.location(key))

    def get(self, key):
        found = self._of(key)
        if not found:
            raise NotFoundError('%s does not exist' % self.location(key))
        return self._dump(found[-1]['id'], key)

    def list(self, prefix):
        newest = {}
        for snapshot in self._snapshot_list():
            key = snapshot_key(snapshot)
            if key.startswith(prefix):
                newest[key] = snapshot  # oldest first: the newest of a key wins
        return [self._info(key, snapshot) for key, snapshot in sorted(newest.items())]

    def stat(self, key):
        found = self._of(key)
        return self._info(key, found[-1]) if found else None

    def delete(self, key):
        ids = [s['id'] for s in self._of(key)]
        if ids:
            self._forget(ids)

    def _forget(self, ids):
        self._run('forgetting', 'forget', *ids)
        self._pending_prune = True
        self._snapshots = None

    def _info(self, key, snapshot):
        size = None
        for tag in snapshot.get('tags') or ():
            if tag.startswith('size:') and tag[5:].isdigit():
                size = int(tag[5:])
        return ObjectInfo(key, size, _time(snapshot.get('time')),
                          {'snapshot': snapshot.get('id'), 'tags': list(snapshot.get('tags') or ())})

    # -- restic's own maintenance ---------------------------------------------------------
    def prune(self):
        """Reclaim the space of forgotten snapshots (one prune for a whole retention run)."""
        self._pending_prune = False
        self._run('pruning', 'prune')

    def check(self, read_data_subset=None):
        """``restic check`` (structure), plus ``--read-data-subset`` (e.g. ``10%``, ``1/5``,
        ``500M``) to re-read and decrypt that much pack data. Raises IntegrityError on damage."""
        self._ensure(create=False)
        args = ['check']
        if read_data_subset:
            if not _SUBSET_RE.match(str(read_data_subset)):
                raise ConfigError('read_data_subset %r is not a restic subset' % (read_data_subset,),
                                  'use a percentage (10%), a part (1/5) or a size (500M)')
            args.append('--read-data-subset=%s' % read_data_subset)
        rc, out, err = run(self._argv(*args), self.log, env=self._env)
        if rc != 0:
            if any(marker in err + out for marker in _DAMAGED):
                detail = self._scrub((err.strip() or out.strip())[-1500:])
                raise IntegrityError('restic check found damage in %s: %s' % (self.location(), detail),
                                     'restore from another repository; restic repair or a new repository may be needed')
            self._fail('checking', rc, err)
        return {'location': self.location(), 'read_data_subset': read_data_subset, 'ok': True}

    def close(self):
        if self._pending_prune:
            self.prune()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()  # a failing prune is this run's failure
        else:
            try:
                self.close()
            except Exception:
                pass  # the error already on its way says more; the next run prunes again
        return False


def snapshot_key(snapshot):
    """The key of one of our snapshots: its single path without the leading ``/``."""
    paths = snapshot.get('paths') or ['']
    return paths[0].lstrip('/')


def extra_tags(key, reader):
    """``source:<type>`` for a manifest (a small in-memory JSON); nothing for an artifact."""
    if not key.endswith(mf.MANIFEST_SUFFIX) or not hasattr(reader, 'getvalue'):
        return []
    try:
        source = (json.loads(reader.getvalue().decode('utf-8')).get('source') or {}).get('type')
    except (ValueError, AttributeError, UnicodeDecodeError):
        return []
    return ['source:%s' % source] if source and ',' not in str(source) else []


def _summary(output):
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get('message_type') == 'summary':
                return data
    return {}


def _time(text):
    if not text:
        return None
    # restic writes nanoseconds and an offset: 2026-11-23T01:02:03.123456789+01:00
    match = re.match(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$', text)
    if not match:
        return None
    moment = datetime.datetime.fromisoformat(match.group(1) + (match.group(3) or 'Z').replace('Z', '+00:00'))
    return moment.astimezone(datetime.timezone.utc)
