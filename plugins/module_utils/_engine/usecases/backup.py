# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``backup`` use case (the scheduled job): dump and upload in one pass, the streaming
repositories reading the dump while it is written."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from .. import manifest as mf
from ..commands import CommandLog
from ..errors import BackupError, ConfigError
from ..fanout import GrowingFile, follow
from ..repositories.base import StreamingStore
from .dump import dump
from .upload import _check_min_success, _complete, _in_threads, _send, _upload_result, _UploadJob, load_local_backup


def backup(name, source, dest, repositories, min_success=None, log=None, **dump_options):
    """Dump ``source`` into ``dest`` (as dump) and copy it to every repository (as upload) in
    one pass: what the scheduled job runs.

    Repositories whose ``put`` takes a stream (``streams``: local, s3, sftp) read the artifact
    while the dump writes it, each through its own handle on the file being written
    (fanout.GrowingFile), so a slow store never holds the dump back and memory stays flat.
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
        tee = _Tee([job for job in jobs if isinstance(job.repo, StreamingStore)])
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
