# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's entry points: dump, upload, retention, restore, info.

Modules and the ``offsite-backup`` runner call these and nothing below them. Each returns
a plain dict (JSON-able) and records the commands it ran in the ``CommandLog`` it is given.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import datetime
import errno
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid

from . import costs
from . import lifeline
from . import manifest as mf
from . import scratch as leases
from .catalog import Catalog
from .commands import CommandLog
from .encryption import ENCRYPTION_EXT_FOR, Encryption
from .errors import (BackupError, ConfigError, DependencyError, DiskFullError, IntegrityError, LockedError,
                     NotFoundError, as_backup_error, from_os_error)
from .pipeline import (COMPRESSION_EXT_FOR, GrowingFile, HashingWriter, VerifiedStream, compress, fan_out,
                       fetch_verified, follow, free_bytes, remove_quietly, validate_compression)
from .locks import lock_horizon
from .repositories import open_repository
from .retention import BackupRef, PolicyError, plan_retention
from .signing import Signer, Verifier
from .sources import open_source

try:
    import fcntl
except ImportError:  # not on Windows; the engine runs on Linux nodes
    fcntl = None

try:
    import jmespath
    JMESPATH_IMPORT_ERROR = None
except ImportError:
    jmespath = None
    JMESPATH_IMPORT_ERROR = traceback.format_exc()

DEFAULT_GRACE_HOURS = 24


# -- dump ---------------------------------------------------------------------------------
@contextlib.contextmanager
def set_lock(directory, name):
    """One run per backup set and directory at a time; the lock dies with the process."""
    path = os.path.join(directory, '.%s.lock' % name)
    try:
        handle = open(path, 'a+')
    except OSError as exc:
        raise from_os_error(exc, 'cannot open the lock file of backup set %s' % name)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                handle.seek(0)
                holder = handle.read().strip() or 'unknown'
                raise LockedError('another run of backup set %s holds %s (%s)' % (name, path, holder),
                                  'wait for it to finish; runs never overlap')
            raise
        handle.seek(0)
        handle.truncate()
        handle.write('pid %d since %s\n' % (os.getpid(), mf.format_time(mf.utcnow())))
        handle.flush()
        yield
    finally:
        handle.close()


def dump(name, source, dest, compression='zstd', level=None, tags=None, threads=1,
         encryption=None, signing=None, check_mode=False, log=None, tee=None):
    """Dump ``source`` into the local directory ``dest`` (the local copy of 3-2-1).

    ``tee`` (see backup()) is told when the artifact's partial file is opened, and gets its
    bytes as they are written."""
    log = log or CommandLog()
    mf.validate_name(name)
    validate_compression(compression, level)
    enc = Encryption(encryption, log)
    encryption_info = enc.describe()  # bad recipients fail here, before the source is touched
    signer = Signer(signing, log)  # so does a bad signing key
    src = open_source(source, log)
    started = time.time()
    facts = src.probe()
    extension, fmt = src.artifact()
    extension += COMPRESSION_EXT_FOR[compression] + ENCRYPTION_EXT_FOR[enc.scheme]
    created = mf.utcnow()
    set_dir = os.path.join(os.path.abspath(dest), name)
    backup_id = mf.make_id(name, created)
    predicted = {'id': backup_id, 'name': name, 'created': mf.format_time(created),
                 'path': os.path.join(set_dir, '%s.%s' % (backup_id, extension)),
                 'manifest': os.path.join(set_dir, backup_id + mf.MANIFEST_SUFFIX),
                 'compression': compression, 'format': fmt, 'source': facts, 'tags': list(tags or []),
                 'encryption': encryption_info, 'signed_by': signer.public_key}
    if check_mode:
        predicted['estimated_raw_size'] = facts.get('database_size')
        return {'changed': True, 'backup': predicted}
    try:
        os.makedirs(set_dir, mode=0o700, exist_ok=True)
    except OSError as exc:  # dest is a file, on a read-only disk, not ours...
        raise from_os_error(exc, 'cannot create the backup directory %s (dest)' % set_dir)
    with set_lock(set_dir, name):
        warnings = _clock_behind(set_dir, name, created)
        seq = 0
        while any(os.path.exists(os.path.join(set_dir, mf.make_id(name, created, seq) + suffix))
                  for suffix in ('.' + extension, mf.MANIFEST_SUFFIX)):
            seq += 1
        backup_id = mf.make_id(name, created, seq)
        final = os.path.join(set_dir, '%s.%s' % (backup_id, extension))
        partial = '%s.%s%s' % (final, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
        try:
            with open(partial, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                writer = HashingWriter(tee.start(mf.artifact_key(name, backup_id, extension), partial, out)
                                       if tee else out)
                src.work_dir = set_dir  # where a source may spool (same disk as the backup)
                with src.dump() as reader:
                    # source -> compress -> encrypt -> hash -> file: the sha256 covers what is stored
                    with enc.encrypting(writer) as sink:
                        raw_size = compress(reader, sink, compression, level, threads)
                # facts only known once the dump finished (row counts for verification)
                facts.update(src.dump_facts())
                out.flush()
                os.fsync(out.fileno())
            os.rename(partial, final)
        except OSError as exc:
            remove_quietly(partial)
            if exc.errno == errno.ENOSPC:
                raise DiskFullError('no space left in %s while dumping %s' % (set_dir, src.describe()),
                                    'free space or apply retention; the partial dump was removed')
            raise from_os_error(exc, 'dumping %s into %s (the partial dump was removed)' % (src.describe(), set_dir))
        except BaseException:
            remove_quietly(partial)
            raise
        duration = time.time() - started
        data = mf.build(name, backup_id, created, extension, compression, fmt, writer.size,
                        writer.hexdigest(), raw_size, facts, tags, duration, encryption=encryption_info)
        data = signer.sign(data)
        manifest_path = os.path.join(set_dir, backup_id + mf.MANIFEST_SUFFIX)
        _write_atomic(manifest_path, mf.dumps(data))  # manifest last: now the backup exists
    result = dict(predicted, id=backup_id, path=final, manifest=manifest_path, size=writer.size,
                  sha256=writer.hexdigest(), raw_size=raw_size, duration=round(duration, 3))
    if warnings:
        return {'changed': True, 'backup': result, 'warnings': warnings}
    return {'changed': True, 'backup': result}


def _clock_behind(set_dir, name, created):
    """A warning when a backup in ``set_dir`` is dated after ``created`` (this machine's now):
    the clock went back, or that backup came from a machine whose clock was ahead."""
    stamps = [mf.parse_id(f[:-len(mf.MANIFEST_SUFFIX)]) for f in os.listdir(set_dir) if f.endswith(mf.MANIFEST_SUFFIX)]
    newest = max((p for p in stamps if p and p[0] == name), key=lambda p: p[1], default=None)
    if newest is None or newest[1] <= created:
        return []
    return ['this machine\'s clock (%s) is %s behind the newest backup of %s in %s (dated %s): check the clock '
            '(timedatectl, NTP); backups dated more than clock_skew in the future are suspect and never count '
            'as the newest' % (mf.format_time(created), mf.format_duration(newest[1] - created), name, set_dir,
                               mf.format_time(newest[1]))]


def _write_atomic(path, data):
    partial = '%s.%s%s' % (path, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
    try:
        with open(partial, 'wb') as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(partial, path)
    except BaseException:
        remove_quietly(partial)
        raise


# -- upload -------------------------------------------------------------------------------
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
    time (``pipeline.fan_out``); one failing repository does not stop the others. The task
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
        def put(reader):
            # a second, seekable handle for stores that hash ahead of sending (b2's
            # large_file_sha1); the others never touch it
            with open(path, 'rb') as ahead:
                reader.source = ahead
                return job.repo.put(art_key, reader, data['size'], data['sha256'])
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


# -- backup: dump and upload in one pass ------------------------------------------------
def backup(name, source, dest, repositories, min_success=None, log=None, **dump_options):
    """Dump ``source`` into ``dest`` (as dump) and copy it to every repository (as upload) in
    one pass: what the scheduled job runs.

    Repositories whose ``put`` takes a stream (``streams``: local, s3, sftp) read the artifact
    while the dump writes it, each through its own handle on the file being written
    (pipeline.GrowingFile), so a slow store never holds the dump back and memory stays flat.
    Their stream ends only once the local backup is complete (the source tool exited cleanly,
    the manifest is written); a dump that fails aborts every put (multipart uploads aborted,
    partial files removed). The other stores (they need the size in advance) get the
    artifact from the local copy afterwards, as upload does. Upload's contract holds for
    all: a repository's manifest is written only after what it stored was proven equal to
    the local manifest, and fewer than ``min_success`` (default: all) successes fail the run.

    Returns {'changed', 'backup': dump's backup, 'upload': upload's result} and dump's
    ``warnings`` if any. A failed upload
    raises upload's error, with the complete local backup in ``details['backup']``."""
    log = log or CommandLog()
    repositories = [r for r in repositories or [] if r]
    if not repositories:
        raise ConfigError('no repositories given')
    min_success = len(repositories) if min_success is None else min_success
    _check_min_success(min_success, repositories)
    jobs = [_UploadJob(options, None, log) for options in repositories]
    try:
        _in_threads([job.open for job in jobs])  # connected before the dump starts; a failed one fails alone
        tee = _Tee([job for job in jobs if job.repo is not None and job.repo.streams])
        try:
            dumped = dump(name, source, dest, log=log, tee=tee if tee.jobs else None, **dump_options)
        except BaseException as exc:
            tee.finish(exc)
            raise
        path, data = load_local_backup(dumped['backup'])
        art_key = mf.artifact_key(name, data['id'], data['extension'])
        man_key = mf.manifest_key(name, data['id'])
        for job in jobs:
            job.outcome['key'] = art_key
            if job.repo is not None:
                job.outcome.update(location=job.repo.location(art_key), status='pending')
        for job, outcome in zip(tee.jobs, tee.finish()):
            put = outcome[0]
            _complete(job, outcome, data, art_key, man_key, (put.size, put.sha256) if put else None, path)
        rest = [job for job in jobs if job.outcome.get('status') == 'pending']
        if rest:
            _send(path, data, art_key, man_key, rest)
    finally:
        for job in jobs:
            job.close()
    try:
        uploaded = _upload_result(data, jobs, min_success)
    except BackupError as exc:
        exc.details = dict(exc.details or {}, backup=dumped['backup'])
        raise
    return dict(dumped, upload=uploaded)


class _Tee(object):
    """The repositories a dump feeds while it writes: dump calls ``start`` when it opens the
    partial file and writes through what it returns; ``finish`` ends the stream (complete, or
    failed with ``error``) and waits for every put (outcomes as fan_out gives them)."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.growing = self.running = None

    def start(self, key, path, out):
        self.growing = GrowingFile(out)

        def put(job):
            return lambda reader: job.repo.put(key, reader, None, None)
        self.running = follow(self.growing, path, [put(job) for job in self.jobs])
        return self.growing

    def finish(self, error=None):
        if self.growing is None:  # the dump failed before it wrote anything
            return []
        self.growing.finish(error)
        return self.running.join()


# -- snapshot -----------------------------------------------------------------------------
def snapshot(name, source, repository, tags=None, signing=None, check_mode=False, log=None):
    """A hard-linked tree snapshot of a files source in a repository that keeps trees
    (``type: rsync``). Its manifest is written last like any other, so catalog, retention,
    backup_info and restore need nothing else. Nothing changed since the newest snapshot:
    no new one (changed=false)."""
    log = log or CommandLog()
    mf.validate_name(name)
    src = open_source(source, log)
    if src.type != 'files':
        raise ConfigError('snapshot copies file trees, not a %s source' % src.type,
                          'dump databases with offsite.backup.dump and copy them with offsite.backup.upload')
    facts = dict(src.probe(), tool='rsync', tool_version=None)
    signer = Signer(signing, log)
    started = time.time()
    created = mf.utcnow()
    with open_repository(repository, log) as repo:
        if not hasattr(repo, 'snapshot'):
            raise ConfigError('%s repositories hold artifacts, not file trees' % repo.type,
                              'use type: rsync for snapshots, or offsite.backup.dump and offsite.backup.upload')
        catalog = Catalog(repo, name, legacy_tz=_legacy_tz(repository))
        previous = next((b.id for b in catalog.complete if b.manifest.get('format') == mf.TREE_FORMAT), None)
        done = repo.snapshot(name, src.paths, source.get('exclude'), created, previous, check_mode)
        result = {'changed': done['status'] != 'unchanged', 'status': done['status'], 'previous': previous,
                  'location': repo.location(name)}
        if done['status'] != 'snapshot':
            return dict(result, changes=done['changes'])
        data = mf.build(name, done['id'], created, None, 'none', mf.TREE_FORMAT, done['size'], done['sha256'],
                        done['size'], facts, tags, time.time() - started)
        data.update(artifact=done['id'], files=done['files'])
        data = signer.sign(data)
        repo.put_bytes(mf.manifest_key(name, done['id']), mf.dumps(data))  # last: now it exists
    transfer = dict((k, done[k]) for k in ('entries', 'files_transferred', 'source_bytes', 'transferred_bytes',
                                           'bytes_sent', 'bytes_received', 'wire_bytes') if k in done)
    return dict(result, backup={'id': done['id'], 'name': name, 'created': data['created'], 'files': done['files'],
                                'size': done['size'], 'sha256': done['sha256'], 'artifact': done['artifact_key'],
                                'manifest': mf.manifest_key(name, done['id']), 'tags': data['tags'],
                                'signed_by': signer.public_key},
                transfer=transfer, duration=round(time.time() - started, 3))


# -- retention ----------------------------------------------------------------------------
def _refs(items):
    return [BackupRef(b.id, b.created, tuple(b.tags), b.proven_key is not None) for b in items]


ESTIMATE_KEYS = ('providers', 'backup_size', 'interval_hours', 'growth_percent_per_month', 'days', 'start', 'prices')


def estimate_cost(estimate, policy, timezone='UTC', newest=None):
    """``estimate`` options (ESTIMATE_KEYS) priced by costs.estimate; ``backup_size`` defaults to
    the size of ``newest``, the newest complete backup in the repository."""
    options = dict((k, v) for k, v in (estimate or {}).items() if v is not None)
    unknown = sorted(str(k) for k in options if k not in ESTIMATE_KEYS)
    if unknown:
        raise ConfigError('estimate_cost: unknown option(s) %s; valid: %s' % (', '.join(unknown), ', '.join(ESTIMATE_KEYS)))
    size_from = 'backup_size'
    if not options.get('backup_size'):
        if newest is None:
            raise ConfigError('estimate_cost needs backup_size: there is no complete backup to take the size from',
                              'give estimate_cost.backup_size in bytes (the size of one compressed backup)')
        options['backup_size'] = newest.size
        size_from = 'backup %s' % newest.id
    result = costs.estimate(policy, timezone=timezone, **options)
    result['backup_size_from'] = size_from
    return result


def plan(backups, policy, timezone='UTC', now=None, estimate=None, clock_skew=None, log=None):
    """Planning only (no repository): ``backups`` is a list of {id, time, tags}. Runs no
    command: ``log`` (the caller's executed_commands) stays empty."""
    try:
        refs = [BackupRef(str(b['id']), mf.parse_time(b['time']), tuple(b.get('tags') or ())) for b in backups]
        result = plan_retention(refs, policy, tz=timezone, now=now, clock_skew=mf.clock_skew(clock_skew)).as_dict()
    except (KeyError, TypeError) as exc:
        raise ConfigError('each entry of backups needs id and time (%s)' % exc)
    except PolicyError as exc:
        raise ConfigError(str(exc))
    result['changed'] = False
    if estimate:
        result['cost'] = estimate_cost(estimate, policy, timezone)
    return result


def retention(name, repository, policy, timezone='UTC', grace_hours=DEFAULT_GRACE_HOURS,
              check_mode=False, now=None, estimate=None, clock_skew=None, signing=None, log=None):
    """Apply ``policy`` to the complete backups of ``name``; clean incomplete leftovers.

    With trusted keys (``signing``), a backup not signed by one of them takes no part: it is
    never the newest, fills no slot, and is never deleted (reported in ``unauthentic``)."""
    now = now or mf.utcnow()
    check_grace(grace_hours)
    log = log or CommandLog()
    verifier = Verifier(signing, log, required=True)
    with open_repository(repository, log) as repo:
        catalog = Catalog(repo, name, legacy_tz=_legacy_tz(repository), clock_skew=clock_skew, now=now)
        problems = [(b, verifier.problem(b)) for b in catalog.complete]
        unauthentic = [dict(id=b.id, problem=problem) for b, problem in problems if problem]
        complete = [b for b, problem in problems if not problem]
        try:
            # the newest proven backup and every suspect one are kept by the planner
            decided = plan_retention(_refs(complete), policy, tz=timezone, now=now, clock_skew=catalog.clock_skew)
        except PolicyError as exc:
            raise ConfigError(str(exc))
        newest = next((b for b in complete if not b.suspect), None)  # not catalog.latest(): it may be unauthentic
        # before any deletion: a bad estimate_cost option must not leave a half-applied policy
        cost = estimate_cost(estimate, policy, timezone, newest) if estimate else None
        remove_ids = set(b.id for b in decided.remove)
        if newest is not None and newest.id in remove_ids:  # deleting it would be unrecoverable
            raise BackupError('internal error: retention planned to delete the newest backup %s' % newest.id)
        by_id = dict((b.id, b) for b in complete)
        cutoff = now - datetime.timedelta(hours=grace_hours)
        leftovers = [b for b in catalog.incomplete if b.manifest_key is None and b.modified < cutoff]
        partials = [o for o in catalog.leftovers if o.modified < cutoff]
        removed, cleaned, locked = [], [], []
        for backup_id in sorted(remove_ids, key=lambda i: by_id[i].created):
            backup = by_id[backup_id]
            keys = [k for k in (backup.manifest_key, backup.artifact_key, backup.proven_key) if k]
            # asked before deleting anything: deleting the manifest of a backup whose artifact
            # is locked would leave an invisible orphan that is billed and never cleaned
            until = [u for u in (repo.locked_until(k) for k in keys) if u is not None]
            if until:
                locked.append({'id': backup_id, 'retain_until': mf.format_time(max(until))})
                continue
            if not check_mode:
                # manifest first: an interrupted deletion leaves an incomplete backup, never a
                # complete-looking one without data
                for key in keys:
                    repo.delete(key)
                removed.append(backup_id)
        lock_extended = _extend_locks(repo, by_id, decided, policy, now, repository, check_mode)
        aborted = repo.abort_incomplete_uploads(name + '/', cutoff, dry_run=check_mode)
        if not check_mode:
            for key in [b.artifact_key for b in leftovers] + [o.key for o in partials]:
                if repo.locked_until(key) is None:  # a locked leftover waits for its lock to expire
                    repo.delete(key)
                    cleaned.append(key)
        result = dict(decided.as_dict(), **{
            'changed': bool(len(locked) < len(remove_ids) or cleaned or lock_extended or aborted
                            or (check_mode and (leftovers or partials))),
            'removed': removed,
            'locked': locked,
            'lock_extended': lock_extended,
            'incomplete_uploads_aborted': aborted,
            'incomplete': [b.artifact_key for b in leftovers] + [o.key for o in partials],
            'incomplete_removed': cleaned,
            'kept_as_proven': decided.kept_as_proven,
            'damaged': [dict(id=b.id, problem=b.problem) for b in catalog.incomplete if b.manifest_key],
            'location': repo.location(name),
        })
        if unauthentic:
            result['unauthentic'] = unauthentic
            result.setdefault('warnings', []).append(
                '%d backup(s) of %s are not signed by a trusted key and were left alone: %s'
                % (len(unauthentic), name, '; '.join(u['problem'] for u in unauthentic[:5])))
        if cost:
            result['cost'] = cost
        if catalog.suspect:
            result.setdefault('warnings', []).extend(
                '%s; it is kept and not counted as the newest backup: check it, and delete it '
                'by hand if it is bogus' % catalog.describe_suspect(b) for b in catalog.suspect)
        return result


def check_grace(hours):
    """``incomplete_grace``: hours before an incomplete upload is removed; 0 or more."""
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 0:
        raise ConfigError('incomplete_grace is %r; it must be a whole number of hours, 0 or more' % (hours,),
                          'a negative grace would delete uploads still running; the default is %d'
                          % DEFAULT_GRACE_HOURS)


def _extend_locks(repo, by_id, decided, policy, now, repository, check_mode):
    """Backups kept as monthly or yearly copies stay locked for as long as the policy keeps them."""
    extended = []
    for ref in decided.keep:
        backup = by_id[ref.id]
        horizon = lock_horizon(backup.created, decided.reasons.get(ref.id, ()), policy, now,
                               repository.get('object_lock_days'))
        if horizon is None:
            continue
        done = [repo.extend_lock(k, horizon, dry_run=check_mode) for k in (backup.artifact_key, backup.manifest_key) if k]
        if any(done):
            extended.append({'id': ref.id, 'retain_until': mf.format_time(horizon)})
    return extended


def _legacy_tz(options):
    name = (options or {}).get('legacy_timezone')
    if not name:
        return datetime.timezone.utc
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:
        raise ConfigError('legacy_timezone %r is not a known IANA time zone' % name)


# -- info ---------------------------------------------------------------------------------
def info(name, repository, query=None, repository_check=None, clock_skew=None, signing=None, log=None):
    log = log or CommandLog()
    verifier = Verifier(signing, log, required=True)
    with open_repository(repository, log) as repo:
        checker = getattr(repo, 'check', None)
        if repository_check and checker is None:
            raise ConfigError('repository_check needs a repository that checks itself (restic); %s does not'
                              % repo.type, 'remove repository_check; restore drills prove the other types')
        catalog = Catalog(repo, name, legacy_tz=_legacy_tz(repository), clock_skew=clock_skew)
        backups = [_with_signature(b.as_dict(), b, verifier) for b in catalog.backups]
        latest = catalog.latest()
        result = {'changed': False, 'backups': backups,
                  'latest': _with_signature(latest.as_dict(), latest, verifier) if latest else None,
                  'count': len(catalog.complete), 'location': repo.location(name),
                  'repository': repo.series_name(), 'total_size': sum(b.size or 0 for b in catalog.backups),
                  'stored_bytes': catalog.stored_bytes(),
                  'suspect': [b.id for b in catalog.suspect]}
        if catalog.suspect:
            result['warnings'] = [catalog.describe_suspect(b) for b in catalog.suspect]
        if repository_check:
            result['repository_check'] = checker(repository_check)  # damage raises IntegrityError
    if query:
        if jmespath is None:
            raise DependencyError('the Python library jmespath is missing on this node (needed for query)',
                                  'pip install jmespath into the interpreter that runs the modules')
        try:
            result['backups'] = jmespath.search(query, backups)
        except jmespath.exceptions.JMESPathError as exc:
            raise ConfigError('query %r is not valid JMESPath: %s' % (query, exc))
    return result


def _with_signature(entry, backup, verifier):
    """``signed``; with trusted keys also ``authentic`` (and ``authenticity_problem``)."""
    entry['signed'] = bool(backup.manifest.get('signature'))
    if verifier.enabled and backup.complete:
        problem = verifier.problem(backup)
        entry['authentic'] = problem is None
        if problem:
            entry['authenticity_problem'] = problem
    return entry


# -- restore ------------------------------------------------------------------------------
def restore(*args, **kwargs):
    """Restore one backup into ``target`` (arguments: ``_restore``). Stops, removing its scratch
    work, on SIGTERM/SIGINT/SIGHUP or when the process that started it dies; never swaps the
    target in then (``lifeline``)."""
    with lifeline.guarded():
        return _restore(*args, **kwargs)


def _restore(name, repository, target, backup='latest', mode='create', work_dir=None,
             mark_proven=False, encryption=None, signing=None, check_mode=False, clock_skew=None,
             log=None):
    log = log or CommandLog()
    started = time.time()
    verifier = Verifier(signing, log, required=True)
    with open_repository(repository, log) as repo:
        catalog = Catalog(repo, name, legacy_tz=_legacy_tz(repository), clock_skew=clock_skew)
        chosen = catalog.select(backup)
        warnings = [] if chosen.id == backup else catalog.passed_over(chosen, backup)
        # before the target is even looked at: a forged backup never reaches it
        verifier.check(chosen, repo.location(chosen.manifest_key or chosen.artifact_key))
        data = chosen.manifest or _legacy_manifest(chosen)
        source_type = (data.get('source') or {}).get('type')
        if source_type and target.get('type') != source_type:
            raise ConfigError('backup %s is a %s backup and cannot be restored into a %s target'
                              % (chosen.id, source_type, target.get('type')))
        where = repo.location(chosen.artifact_key)
        enc = Encryption(encryption, log)
        enc.check_backup(data.get('encryption'), where)  # the key is there before anything moves
        decrypt = decrypter(enc, data, where)
        tgt = open_source(target, log)
        target_facts = tgt.check_target(mode)
        age = (mf.utcnow() - chosen.created).total_seconds()
        summary = {'backup': chosen.as_dict(), 'target': tgt.describe(), 'mode': mode,
                   'age_seconds': int(age), 'target_existed': target_facts.get('exists')}
        if warnings:
            summary['warnings'] = warnings
        if check_mode:
            return dict(summary, changed=True, status='would restore')
        # what killed restores of this target left goes first (reported); a live one's stays
        summary['cleaned'] = _sweep(tgt, work_dir, leases.Sweep()).removed
        if data.get('format') == mf.TREE_FORMAT:
            # a snapshot directory (rsync repository) is copied straight into the target's
            # scratch directory and proven there against the manifest's listing
            details = tgt.restore_tree(lambda scratch: repo.fetch_tree(chosen.artifact_key, scratch, data), data, mode)
            downloaded = started  # download and restore are one copy
        elif getattr(tgt, 'streams', lambda: False)():
            # download, verify, decrypt, decompress and load at once; proven before the swap
            with repo.get(chosen.artifact_key) as reader:
                with VerifiedStream(reader, chosen.compression, chosen.size, chosen.sha256, where, decrypt) as stream:
                    details = tgt.restore_stream(stream, data, mode)
            downloaded = started  # download and load overlapped: all of it counts as restore
        else:
            work_dir = os.path.abspath(work_dir or tempfile.gettempdir())
            if not os.path.isdir(work_dir):
                raise ConfigError('work_dir %s does not exist or is not a directory' % work_dir,
                                  'create it or set work_dir to a directory with room for the download; '
                                  'nothing was changed')
            needed = data.get('raw_size') or 0
            if needed and free_bytes(work_dir) < needed * 1.05:
                raise DiskFullError('%s has %d MiB free; restoring %s needs about %d MiB there'
                                    % (work_dir, free_bytes(work_dir) // 2 ** 20, chosen.id, needed // 2 ** 20),
                                    'free space or set work_dir to a larger disk; nothing was changed')
            scratch = leases.make_work_dir(work_dir)
            try:
                local = os.path.join(scratch, 'artifact.%s' % (data.get('extension') or 'dump').split('.')[0])
                with repo.get(chosen.artifact_key) as reader:
                    fetch_verified(reader, local, chosen.compression, expected_size=chosen.size,
                                   expected_sha256=chosen.sha256, where=where, decrypt=decrypt)
                downloaded = time.time()
                details = tgt.restore(local, data, mode)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        finished = time.time()
        if mark_proven:
            # written only now: the checksum was proven and the target swapped in
            proof = {'id': chosen.id, 'sha256': chosen.sha256, 'proven': mf.format_time(mf.utcnow()),
                     'target': tgt.describe(), 'restore_seconds': round(finished - started, 3)}
            repo.put_bytes(mf.proven_key(name, chosen.id), mf.dumps(proof))
            summary['proven_marker'] = repo.location(mf.proven_key(name, chosen.id))
    return dict(summary, changed=True, status='restored', restored=details,
                duration=round(finished - started, 3),
                download_seconds=round(downloaded - started, 3),
                restore_seconds=round(finished - downloaded, 3))


def cleanup(target=None, work_dir=None, check_mode=False, log=None):
    """Remove what killed restores left: scratch databases (or directories) of ``target`` and
    work directories in ``work_dir`` (and the system temp dir), where their owner provably died.
    Returns ``removed`` (what, as text) and ``kept`` (found, owner unknown: why)."""
    log = log or CommandLog()
    sweep = _sweep(open_source(target, log) if target else None, work_dir, leases.Sweep(check_mode))
    return dict(sweep.result(), changed=bool(sweep.removed))


def _sweep(tgt, work_dir, sweep):
    if tgt is not None:
        tgt.sweep_scratch(sweep)
    for directory in sorted(set([os.path.abspath(work_dir or tempfile.gettempdir()), tempfile.gettempdir()])):
        leases.sweep_work_dirs(directory, sweep)
    return sweep


def decrypter(enc, data, where):
    """The ``decrypt`` stage for VerifiedStream, or None for an unencrypted backup."""
    info = data.get('encryption')
    if not info:
        return None
    return lambda reader: enc.decrypting(reader, info, where)


def _legacy_manifest(backup):
    """What a seed script's file name implies: a tar of files, or a PostgreSQL dump
    (plain SQL unless it is a custom-format .dump)."""
    key = backup.artifact_key
    if '.tar' in key:
        return {'format': 'tar', 'extension': 'tar', 'source': {'type': 'files'}, 'legacy': True}
    fmt = 'custom' if '.dump' in key else 'plain'
    return {'format': fmt, 'extension': 'dump' if fmt == 'custom' else 'sql',
            'source': {'type': 'postgresql'}, 'legacy': True}
