# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``upload`` use case: one local backup copied to every repository at once, each
repository's manifest written only once what it stored is proven; one repository, one failure."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import os
import threading
import time

from .. import manifest as mf
from ..commands import CommandLog
from ..errors import BackupError, ConfigError, IntegrityError, NotFoundError, as_backup_error
from ..fanout import fan_out
from ..repositories import open_repository
from ..repositories.base import LocalFileStore


def load_local_backup(backup):
    """The artifact path and manifest of a local backup, from a path or dump's result."""
    if isinstance(backup, dict):
        path = backup.get('path')
    else:
        path = backup
    if not path:
        raise ConfigError('backup must be the path of an artifact or the backup returned by dump')
    path = os.path.abspath(path)
    manifest_path = os.path.join(os.path.dirname(path), mf.id_from_key(path) + mf.MANIFEST_SUFFIX)
    if not os.path.exists(path):
        raise NotFoundError('backup artifact %s does not exist' % path)
    if not os.path.exists(manifest_path):
        raise NotFoundError('%s has no manifest (%s)' % (path, manifest_path),
                            'it is incomplete or was not made by offsite.backup.dump; dump again')
    with open(manifest_path, 'rb') as handle:
        data = mf.loads(handle.read(), manifest_path)
    if os.path.getsize(path) != data['size']:
        raise BackupError('%s has %d bytes but its manifest records %d' % (path, os.path.getsize(path), data['size']),
                          'the local copy is damaged; dump again')
    return path, data


def upload(backup, repositories, name=None, min_success=None, check_mode=False, log=None):
    """Copy one local backup to every repository: artifact, verified, then manifest.

    The artifact is read once and streamed to every repository that needs it at the same
    time (``fanout.fan_out``); one failing repository does not stop the others. The task
    fails unless at least ``min_success`` repositories (default: all) hold the backup."""
    log = log or CommandLog()
    path, data = load_local_backup(backup)
    repositories = [r for r in repositories or [] if r]
    if not repositories:
        raise ConfigError('no repositories given')
    if name and name != data['name']:
        raise ConfigError('%s belongs to backup set %s, not %s' % (path, data['name'], name),
                          'upload the right file or fix `name`')
    min_success = len(repositories) if min_success is None else min_success
    _check_min_success(min_success, repositories)
    name = data['name']
    art_key = mf.artifact_key(name, data['id'], data['extension'])
    man_key = mf.manifest_key(name, data['id'])
    jobs = [_UploadJob(options, art_key, log) for options in repositories]
    try:
        # 1. open each repository and decide, all at once: already there, or to be fed
        _in_threads([lambda job=job: job.decide(data, art_key, man_key, check_mode) for job in jobs])
        feed = [job for job in jobs if job.outcome.get('status') == 'pending']
        if feed:
            _send(path, data, art_key, man_key, feed)
    finally:
        for job in jobs:
            job.close()
    return _upload_result(data, jobs, min_success)


def _upload_result(data, jobs, min_success):
    """The result of an upload to ``jobs``, or the error when fewer than ``min_success`` got it."""
    results = [job.outcome for job in jobs]
    failures = [r for r in results if r['status'] == 'failed']
    result = {'changed': any(r['status'] in ('uploaded', 'would upload') for r in results),
              'backup': {'id': data['id'], 'name': data['name'], 'size': data['size'], 'sha256': data['sha256']},
              'repositories': results}
    summary = '; '.join('%s: %s' % (f.get('location') or f['type'], f['error']) for f in failures)
    if len(results) - len(failures) < min_success:
        error = BackupError('upload of %s failed on %d of %d repositories (%d must succeed): %s'
                            % (data['id'], len(failures), len(results), min_success, summary),
                            details=result)
        kinds = set(f['error_kind'] for f in failures)
        if len(kinds) == 1:  # one cause everywhere: report its kind (not_found, repository...)
            error.kind = kinds.pop()
        raise error
    if failures:
        result['failed_repositories'] = [f.get('location') or f['type'] for f in failures]
        result['warnings'] = ['upload of %s failed on %d of %d repositories (min_success %d still met): %s'
                              % (data['id'], len(failures), len(results), min_success, summary)]
    return result


def _check_min_success(min_success, repositories):
    if not 1 <= min_success <= len(repositories):
        raise ConfigError('min_success is %s but %d repositories are given' % (min_success, len(repositories)),
                          'use a number from 1 to the number of repositories (default: all of them)')


class _UploadJob(object):
    """One repository of an upload: its connection, its outcome, its clock."""

    def __init__(self, options, art_key, log):
        self.options = options
        self.log = log
        self.repo = None
        self.started = time.time()
        self.outcome = {'type': options.get('type'), 'key': art_key, 'bytes': 0,
                        'repository': options.get('name') or options.get('type')}

    def open(self):
        with self.failing():
            self.repo = open_repository(self.options, self.log)
            self.outcome['repository'] = self.repo.series_name()

    def decide(self, data, art_key, man_key, check_mode):
        self.open()
        with self.failing():
            if self.repo is None:
                return
            self.outcome['location'] = self.repo.location(art_key)
            if _already_there(self.repo, data, art_key, man_key):
                self.outcome['status'] = 'unchanged'
            else:
                self.outcome['status'] = 'would upload' if check_mode else 'pending'
        if self.outcome['status'] != 'pending':
            self.stop()

    @contextlib.contextmanager
    def failing(self):
        """Any exception inside (a BackupError, an OSError of any kind, a library's bug) marks
        this repository failed and is not raised: one repository, one failure."""
        try:
            yield
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc):
        """Record ``exc`` (any exception) as this repository's failure and its cause."""
        error = as_backup_error(exc, 'using the %s repository %s' % (
            self.options.get('type'), self.outcome.get('location') or self.describe()))
        self.outcome.update(status='failed', error=str(error), error_kind=error.kind)
        if 'exception' in (error.details or {}):
            self.outcome['exception'] = error.details['exception']
        self.stop()

    def describe(self):
        try:
            return self.repo.location() if self.repo is not None else open_repository(self.options).location()
        except Exception:
            return '(%s)' % self.options.get('type')

    def stop(self):
        if 'duration' not in self.outcome:
            self.outcome['duration'] = round(time.time() - self.started, 3)

    def close(self):
        if self.repo is not None:
            try:
                self.repo.close()
            except Exception:
                pass
        self.stop()


def _in_threads(calls):
    """Run the calls concurrently (one thread each) and wait for all; the first error that
    is not a BackupError (those are recorded per repository) is raised afterwards."""
    errors = []

    def run(call):
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _already_there(repo, data, art_key, man_key):
    remote_manifest = repo.stat(man_key)
    if remote_manifest is None:
        return False
    try:
        remote = mf.loads(repo.get_bytes(man_key), repo.location(man_key))
    except BackupError:
        remote = {}
    artifact = repo.stat(art_key)
    return remote.get('sha256') == data['sha256'] and artifact is not None and artifact.size == data['size']


def _send(path, data, art_key, man_key, jobs):
    """Read the artifact once and put it into every job's repository at the same time; then,
    only if what was read matches the manifest, write each successful repository's manifest."""
    def consumer(job):
        # stores that read the local file themselves are told where it is (LocalFileStore)
        local = {'local': path} if isinstance(job.repo, LocalFileStore) else {}

        def put(reader):
            return job.repo.put(art_key, reader, data['size'], data['sha256'], **local)
        return put

    try:
        with open(path, 'rb') as handle:
            size, sha256, outcomes = fan_out(handle, [consumer(job) for job in jobs])
    except (IOError, OSError) as exc:
        error = BackupError('cannot read the local artifact %s: %s' % (path, exc.strerror or exc),
                            'check the disk of the dump directory; nothing was marked complete')
        for job in jobs:
            job.fail(error)
        return
    for job, outcome in zip(jobs, outcomes):
        _complete(job, outcome, data, art_key, man_key, (size, sha256), path)


def _complete(job, outcome, data, art_key, man_key, read, path):
    """After one repository's put: its manifest if the put succeeded and ``read`` (size,
    sha256 of the bytes it was sent) matches the backup's manifest; else the job fails."""
    result, exc, sent = outcome
    job.outcome['bytes'] = sent
    if exc is not None:
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: the whole run stops
        job.fail(exc)  # whatever it is, it is this repository's failure (the others go on)
        return
    with job.failing():
        if tuple(read) != (data['size'], data['sha256']):
            # the local copy rotted or changed since it was written: never mark such a copy complete
            try:
                job.repo.delete(art_key)
            except Exception:
                pass  # left without a manifest: incomplete, and retention cleans it up
            raise IntegrityError('local artifact %s does not match its manifest (sha256 %s, expected %s)'
                                 % (path, read[1], data['sha256']),
                                 'the local copy is damaged; dump again (nothing was marked complete)')
        job.repo.put_bytes(man_key, mf.dumps(data))  # manifest last
        job.outcome['status'] = 'uploaded'
        job.stop()
