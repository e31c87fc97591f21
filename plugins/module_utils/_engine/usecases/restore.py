# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``restore`` and ``cleanup`` use cases: one backup into a target, proven before it is
swapped in; and what killed restores left behind."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import tempfile
import threading
import time

from .. import lifeline
from .. import manifest as mf
from .. import scratch as leases
from ..catalog import Catalog, legacy_timezone
from ..commands import CommandLog
from ..encryption import Encryption, decrypter
from ..errors import ConfigError, DiskFullError, IntegrityError
from ..framefetch import FrameFetch, reorders
from ..pglayout import read_layout
from ..pipeline import VerifiedStream, fetch_verified, free_bytes
from ..repositories import open_repository
from ..repositories.base import RangedReads
from ..signing import Verifier
from ..sources import open_source
from ..sources.base import FollowingRestore, ReplaysArchive, StreamingRestore


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
    tgt = open_source(target, log)
    if isinstance(tgt, ReplaysArchive):
        tgt.use_archive(name, [repository], encryption, signing)
    with open_repository(repository, log) as repo:
        catalog = Catalog(repo, name, legacy_tz=legacy_timezone(repository), clock_skew=clock_skew)
        chosen = tgt.choose_backup(catalog, backup)
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
        elif isinstance(tgt, StreamingRestore) and tgt.streams():
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
            following = isinstance(tgt, FollowingRestore) and tgt.follows(data)
            layout = _frames_to_fetch(repo, data, decrypt, where, summary) if following else None
            opening = _Opening(repo, chosen.artifact_key) if layout is None else None
            try:
                local = os.path.join(scratch, 'artifact.%s' % (data.get('extension') or 'dump').split('.')[0])
                fetched = []

                def fetch(follow=None):
                    if layout is not None:  # frame by frame, the most load work per byte first
                        FrameFetch(repo, chosen.artifact_key, local, layout, follow.walk, follow,
                                   chosen.size, chosen.sha256, where).run()
                    else:
                        with opening.take() as reader:
                            fetch_verified(reader, local, chosen.compression, expected_size=chosen.size,
                                           expected_sha256=chosen.sha256, where=where, decrypt=decrypt,
                                           tap=follow.tap if follow else None)
                    fetched.append(time.time())
                    return local
                if following:
                    # loading starts while the work file is written; proven before the swap
                    details = tgt.restore_following(local, fetch, data, mode, where, layout)
                    summary['data_offsets'] = details.pop('data_offsets', None)
                else:
                    fetch()
                    details = tgt.restore(local, data, mode)
                downloaded = fetched[0]
            finally:
                if opening is not None:
                    opening.close()
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


def _frames_to_fetch(repo, manifest, decrypt, where, summary):
    """The manifest's layout (pglayout.py) when the artifact can be fetched frame by frame and
    that changes its order: a store that reads ranges, an artifact not encrypted (a decrypting
    tool reads in order), and a table slower to load than those before it (framefetch.plan). A layout that does not hold together is passed over
    with a warning: the artifact is then fetched in order, as one written without one."""
    if not isinstance(repo, RangedReads) or decrypt is not None:
        return None
    try:
        layout = read_layout(manifest)
    except IntegrityError as exc:
        summary.setdefault('warnings', []).append('the layout in the manifest of %s was not used: %s' % (where, exc))
        return None
    if layout is None or not reorders(layout):
        return None
    return layout


class _Opening(object):
    """The artifact's download, opened in a thread of its own while the target prepares (the
    scratch database is created, its lease written): the store's time to the first byte (0.17 s
    from moto for a 175 MB object, tens of milliseconds from S3) passes beside the target's own
    round trips instead of after them. ``take`` hands the opened reader over, once; ``close``
    closes it if nothing took it (the restore failed before its download).

    The thread lives until the reader is closed: a process it started to read the artifact
    (``restic dump``) gets SIGKILL when the thread that started it ends (``lifeline``)."""

    def __init__(self, repo, key):
        self.repo, self.key = repo, key
        self.context = self.reader = self.error = None
        self.taken = False
        self.opened, self.closed = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._open, name='offsite-restore-open')
        self.thread.daemon = True
        self.thread.start()

    def _open(self):
        try:
            self.context = self.repo.get(self.key)  # some stores ask before they stream (restic)
            self.reader = self.context.__enter__()
        except BaseException as exc:  # raised where the reader is taken, as if opened there
            self.error = exc
        self.opened.set()
        self.closed.wait()

    def take(self):
        self.opened.wait()
        if self.taken:
            raise RuntimeError('the download of the artifact was taken twice')
        self.taken = True
        if self.error is not None:
            raise self.error
        return self

    def __enter__(self):
        return self.reader

    def __exit__(self, *exc_info):
        try:
            return self.context.__exit__(*exc_info)
        finally:
            self.closed.set()

    def close(self):
        self.opened.wait()
        try:
            if self.reader is not None and not self.taken:
                self.taken = True
                self.context.__exit__(None, None, None)
        finally:
            self.closed.set()
            self.thread.join()


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


def _legacy_manifest(backup):
    """What a seed script's file name implies: a tar of files, or a PostgreSQL dump
    (plain SQL unless it is a custom-format .dump)."""
    key = backup.artifact_key
    if '.tar' in key:
        return {'format': 'tar', 'extension': 'tar', 'source': {'type': 'files'}, 'legacy': True}
    fmt = 'custom' if '.dump' in key else 'plain'
    return {'format': fmt, 'extension': 'dump' if fmt == 'custom' else 'sql',
            'source': {'type': 'postgresql'}, 'legacy': True}
