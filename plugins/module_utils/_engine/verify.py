# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``verify``: prove that the offsite copies of a backup set are there and readable.

Per repository: every manifest parses and its artifact has the recorded size (the catalog);
a sample of the artifacts (``read_data``; the newest always) is downloaded and its sha256
checked; with the private key it is decrypted and decompressed to the end and the dump
validated by the tool that will restore it. Then the set's age (``max_age``) and, across
repositories, that each holds the same backups with the same checksums.

Every failure is collected (one repository down does not hide another's damage); the call
raises IntegrityError with the whole report when any check failed.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import math
import os
import random
import re
import shutil
import subprocess
import tempfile

from . import commands
from . import manifest as mf
from . import walchain
from .catalog import Catalog, legacy_timezone
from .commands import CommandLog
from .encryption import Encryption, decrypter
from .errors import AuthenticityError, BackupError, ConfigError, IntegrityError
from .pipeline import VerifiedStream, _NullWriter, chunks, copy, hash_stream, read_full
from .repositories import open_repository
from .repositories.base import SelfCheckingStore
from .signing import Verifier

RDB_MAGIC = b'REDIS'
parse_duration = mf.parse_duration  # max_age


def parse_read_data(value):
    """``None`` (nothing read), ``('percent', N)`` for ``N%``, or ``('count', N)`` for ``N``."""
    if value is None or value == '':
        return None
    text = str(value).strip().lower()
    if text == 'all':
        return ('percent', 100)
    match = re.match(r'^(\d+(?:\.\d+)?)\s*(%?)$', text)
    if not match or (match.group(2) and not 0 < float(match.group(1)) <= 100):
        raise ConfigError('read_data %r is neither a percentage nor a count' % (value,),
                          'write 10%% (a share of the backups), 3 (a number of backups) or all')
    if match.group(2):
        return ('percent', float(match.group(1)))
    if '.' in match.group(1):
        raise ConfigError('read_data %r: a count of backups is a whole number' % (value,))
    return ('count', int(match.group(1)))


def choose_sample(backups, wanted, rng=random):
    """The backups to download: the newest always, then a random draw of the others until
    ``wanted`` (from ``parse_read_data``) is met. ``backups`` are newest first."""
    if not wanted or not backups:
        return []
    kind, amount = wanted
    count = int(amount) if kind == 'count' else int(math.ceil(len(backups) * amount / 100.0))
    count = max(1, min(len(backups), count))
    return [backups[0]] + rng.sample(backups[1:], count - 1)


def verify(name, repositories, read_data=None, encryption=None, max_age=None, check_mode=False, now=None,
           clock_skew=None, signing=None, log=None):
    log = log or CommandLog()
    mf.validate_name(name)
    repositories = [r for r in repositories or [] if r]
    if not repositories:
        raise ConfigError('no repositories given')
    wanted = parse_read_data(read_data)
    max_age_seconds = parse_duration(max_age)
    enc = Encryption(encryption, log)
    verifier = Verifier(signing, log, required=True)
    now = now or mf.utcnow()
    skew = mf.clock_skew(clock_skew)
    reports = [_verify_repository(options, name, wanted, enc, max_age_seconds, now, skew, log, verifier)
               for options in repositories]
    failures = [f for report in reports for f in report['failures']]
    consistency = _compare(reports) if len(reports) > 1 else []
    failures += consistency
    result = {'changed': False, 'name': name, 'ok': not failures, 'failures': failures,
              'repositories': reports, 'checked': sum(len(r['backups']) for r in reports),
              'read': sum(1 for r in reports for b in r['backups'] if b.get('read'))}
    if len(reports) > 1:
        result['consistent'] = not consistency
    forged = [e['id'] for r in reports for e in r['backups'] if e.get('status') == 'unauthentic']
    if forged:  # more than damage: someone wrote backups that no trusted server made
        raise AuthenticityError('verify of %s found %d backup(s) not signed by a trusted key: %s'
                                % (name, len(forged), ', '.join(sorted(set(forged))[:5])),
                                'do not restore them; see failures, and docs/signing.md', details=result)
    if failures:
        raise IntegrityError('verify of %s found %d problem(s): %s' % (name, len(failures), '; '.join(failures[:5])),
                             'see failures and repositories for every check', details=result)
    return result


def _verify_repository(options, name, wanted, enc, max_age_seconds, now, skew, log, verifier):
    report = {'type': options.get('type'), 'location': None, 'backups': [], 'failures': [], 'newest': None}
    try:
        with open_repository(options, log) as repo:
            report['location'] = repo.location(name)
            catalog = Catalog(repo, name, legacy_tz=legacy_timezone(options), clock_skew=skew, now=now)
            complete = catalog.trusted  # a suspect backup is not the newest one
            sample = set(b.id for b in choose_sample(catalog.complete, wanted))
            for backup in catalog.backups:
                entry = {'id': backup.id, 'created': mf.format_time(backup.created), 'size': backup.size,
                         'sha256': backup.sha256, 'legacy': backup.legacy, 'read': False}
                if backup.complete and verifier.problem(backup):
                    entry.update(status='unauthentic', error=verifier.problem(backup))
                    report['failures'].append('%s: %s' % (report['location'], entry['error']))
                elif backup.suspect:
                    entry['status'] = 'suspect'
                    entry['error'] = catalog.describe_suspect(backup)
                    report['failures'].append('%s: %s' % (report['location'], entry['error']))
                elif backup.complete:
                    entry['status'] = 'ok'
                elif backup.manifest_key:
                    entry['status'] = 'damaged'
                    entry['error'] = backup.problem
                    report['failures'].append('%s: backup %s is damaged (%s)' % (report['location'], backup.id,
                                                                                 backup.problem))
                else:  # no manifest: an upload in flight or interrupted; retention cleans it up
                    entry['status'] = 'incomplete'
                    entry['error'] = backup.problem
                if backup.id in sample:
                    _read_backup(repo, backup, enc, entry, report, log)
                report['backups'].append(entry)
            if walchain.has_base_backups(catalog.backups):
                _verify_wal(repo, name, [b for b in complete if not verifier.problem(b)], enc, report, verifier)
            if complete:
                report['newest'] = {'id': complete[0].id, 'created': mf.format_time(complete[0].created),
                                    'age_seconds': int((now - complete[0].created).total_seconds())}
            if not complete:
                report['failures'].append('%s: no complete backup of %s' % (report['location'], name))
            elif max_age_seconds is not None and now - complete[0].created > datetime.timedelta(seconds=max_age_seconds):
                report['failures'].append('%s: the newest backup %s is %s old, more than max_age %s'
                                          % (report['location'], complete[0].id,
                                             _human(report['newest']['age_seconds']), _human(max_age_seconds)))
            if isinstance(repo, SelfCheckingStore):  # a repository with its own integrity check (restic)
                subset = None
                if wanted:
                    subset = '%g%%' % wanted[1] if wanted[0] == 'percent' else None
                report['repository_check'] = repo.check(read_data_subset=subset)
    except BackupError as exc:
        report['error'] = str(exc)
        report['error_kind'] = exc.kind
        report['failures'].append('%s: %s' % (report['location'] or options.get('type'), exc))
    return report


def _verify_wal(repo, name, bases, enc, report, verifier):
    """The WAL of a set with base backups (docs/pitr.md, "verify"): every manifest readable and
    well-formed with its payload of the recorded size, signed by a trusted key when ``verifier``
    trusts any (as wal-fetch requires), and from each base backup's start segment an unbroken
    path to the newest archived segment, across timeline switches."""
    window, problems = walchain.inspect(repo, name, bases, enc, check_manifests=True, verifier=verifier)
    report['wal'] = window
    where = window['location'] if window else report['location']
    seen = set()
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            report['failures'].append('%s: WAL of %s: %s' % (where, name, problem))


def _read_backup(repo, backup, enc, entry, report, log):
    """Download one artifact, check size and sha256; with a key, decrypt, decompress and
    validate it to the end. A failure is recorded in ``entry`` and ``report``."""
    data = backup.manifest or {}
    where = repo.location(backup.artifact_key)
    info = data.get('encryption')
    try:
        if data.get('format') == mf.TREE_FORMAT:  # an rsync snapshot directory: its listing is the checksum
            scratch = tempfile.mkdtemp(prefix='offsite-verify-')
            try:
                repo.fetch_tree(backup.artifact_key, scratch, data)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            entry.update(decrypted=False, validated='tree listing')
        elif backup.legacy or enc.has_identity() or not info:
            enc.check_backup(info, where)
            decrypt = decrypter(enc, data, where)
            with repo.get(backup.artifact_key) as reader:
                with VerifiedStream(reader, backup.compression, backup.size, backup.sha256, where, decrypt) as stream:
                    entry['validated'] = _validate(stream, data, backup, where, log)
            entry['decrypted'] = bool(info)
        else:  # encrypted and no key given: what can be proven is that the ciphertext is intact
            with repo.get(backup.artifact_key) as reader:
                size, sha256 = hash_stream(reader)
            if size != backup.size or sha256 != backup.sha256:
                raise IntegrityError('%s does not match its manifest (%d bytes, sha256 %s; expected %d, %s)'
                                     % (where, size, sha256, backup.size, backup.sha256),
                                     'the copy is corrupted; upload it again from another copy')
            entry['decrypted'] = False
            entry['validated'] = None
        entry['read'] = True
    except BackupError as exc:
        entry['read'] = True
        entry['status'] = 'failed'
        entry['error'] = str(exc)
        entry['error_kind'] = exc.kind
        report['failures'].append('%s: backup %s: %s' % (report['location'], backup.id, exc))


def _validate(stream, data, backup, where, log):
    """Read the decompressed dump to its end through the tool that would restore it; prove
    the checksum (``finish``) before blaming the dump. Returns what validated it."""
    fmt = data.get('format') or ('tar' if '.tar' in (backup.artifact_key or '') else None)
    base = (data.get('extension') or backup.artifact_key.split('.', 1)[-1]).split('.')[0]
    argv = None
    if fmt == 'custom':
        argv = [commands.which('pg_restore', 'to validate PostgreSQL dumps'), '--list']
    elif fmt == 'tar' or base == 'tar':
        argv = [commands.which('tar', 'to validate file archives'), '-t', '-f', '-']
    if argv:
        with commands.streaming(argv, log, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
            # pg_restore --list stops after the table of contents; finish() reads the rest
            commands.feed(proc, chunks(stream))
            rc = proc.wait()
            stream.finish()  # damaged bytes are reported as that, before the tool's complaint
            if rc != 0:
                raise IntegrityError('%s decrypts and decompresses but is not a valid %s dump: %s'
                                     % (where, fmt or base, commands.stderr_tail(proc)[-500:] or 'exit %d' % rc),
                                     'the dump itself is broken; make a new backup and restore-test it')
        return ' '.join([os.path.basename(argv[0])] + argv[1:])
    if fmt == 'rdb' or base == 'rdb':
        head = read_full(stream, len(RDB_MAGIC))
        copy(stream, _NullWriter())
        stream.finish()
        if head != RDB_MAGIC:
            raise IntegrityError('%s is not a Redis RDB file (starts with %r)' % (where, head),
                                 'the dump itself is broken; make a new backup')
        return 'rdb header'
    copy(stream, _NullWriter())
    stream.finish()
    return 'decompressed'


def _compare(reports):
    """Across repositories: the same backups with the same checksums. Backups older than the
    oldest one some repository holds are left out: retention may keep more in one place."""
    readable = [r for r in reports if 'error' not in r]
    if len(readable) < 2:
        return []
    held, oldest = [], []
    for report in readable:
        held.append(dict((b['id'], b) for b in report['backups'] if b['status'] in ('ok', 'failed', 'suspect')))
        # a damaged backup (manifest, no artifact) still shows how far back this repository goes
        listed = [b['created'] for b in report['backups'] if b['status'] != 'incomplete']
        if not listed:
            return []  # an empty repository is already reported as such
        oldest.append(min(listed))
    since = max(oldest)
    failures = []
    ids = sorted(set(i for h in held for i, b in h.items() if b['created'] >= since))
    for backup_id in ids:
        sums = dict((r['location'], h[backup_id]['sha256']) for r, h in zip(readable, held) if backup_id in h)
        missing = [r['location'] for r, h in zip(readable, held) if backup_id not in h]
        if missing:
            failures.append('backup %s is missing on %s' % (backup_id, ', '.join(missing)))
        if len(set(s for s in sums.values() if s)) > 1:
            failures.append('backup %s differs between repositories (%s)'
                            % (backup_id, ', '.join('%s: %s' % (loc, (s or '?')[:12]) for loc, s in sorted(sums.items()))))
    return failures


def _human(seconds):
    if seconds >= 86400:
        return '%.1fd' % (seconds / 86400.0)
    if seconds >= 3600:
        return '%.1fh' % (seconds / 3600.0)
    return '%ds' % seconds
