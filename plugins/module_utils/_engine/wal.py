# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL WAL in the repositories: names, keys, segment manifests, push and fetch.

``offsite-backup wal-push`` (archive_command) and ``wal-fetch`` (restore_command) call
``push`` and ``fetch``; docs/pitr.md is the contract (command lines, exit statuses, layout).

Layout, per backup set, beside (never inside) the set's directory::

    .wal/<set>/<file>.wal[.zst|.gz][.age|.gpg]   the payload: compressed, maybe encrypted
    .wal/<set>/<file>.json                       its manifest, written last

A set name never starts with a dot, so no Catalog of a set lists these objects, as backups
or as leftovers. The manifest is written only after every repository proved the payload
landed (``put`` is atomic and verified), so a file with a manifest is complete; fetch proves
it again (stored size and sha256, then the raw size and sha256 after decryption and
decompression) before the file reaches PostgreSQL.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import hashlib
import json
import os
import re
import struct
import tempfile
import threading
import uuid

from . import manifest as mf
from .commands import CommandLog
from .encryption import ENCRYPTION_EXT_FOR, Encryption, decrypter
from .errors import BackupError, ConfigError, IntegrityError, as_backup_error
from .pipeline import COMPRESSION_EXT_FOR, HashingReader, HashingWriter, compress, fetch_verified, remove_quietly
from .repositories import open_repository

WAL_DIR = '.wal'
KIND = 'wal'
MANIFEST_EXT = '.json'
PAYLOAD_EXT = '.wal'
# the source type whose set the WAL of a job belongs to (when --set does not say)
SOURCE_TYPE = 'postgresql_physical'
# XLogLongPageHeaderData: magic, info, tli, pageaddr, rem_len (+4 padding), sysid, seg_size, blcksz
_LONG_HEADER = struct.Struct('<HHIQI4xQII')
_XLP_LONG_HEADER = 0x0002

_NAME_RE = re.compile(r'^(?:(?P<segment>[0-9A-F]{24})(?:(?P<partial>\.partial)|\.(?P<offset>[0-9A-F]{8})\.backup)?'
                      r'|(?P<history>[0-9A-F]{8})\.history)$')
# what a stored manifest's ``artifact`` may be: the file's name and a payload extension
_ARTIFACT_EXT_RE = re.compile(r'^\.wal(?:\.zst|\.gz)?(?:\.age|\.gpg)?$')
MANIFEST_FIELDS = ('format_version', 'kind', 'name', 'id', 'created', 'artifact', 'compression', 'size',
                   'sha256', 'raw_size', 'raw_sha256')

WalFile = collections.namedtuple('WalFile', 'name kind timeline log seg')
# a key of a set's WAL directory: the WAL file's name, then what the object is of it: its manifest,
# its payload, or a payload upload a store left behind (local and SFTP write ``<key>.<8 hex>.partial``)
_KEY_RE = re.compile(r'^(?P<name>[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)'
                     r'(?:(?P<manifest>\.json)|(?P<payload>\.wal(?:\.zst|\.gz)?(?:\.age|\.gpg)?)'
                     r'(?P<upload>\.[0-9a-f]{8}\.partial)?)$')


def parse_name(name):
    """The WalFile of a name PostgreSQL archives: a segment, a timeline history file, a backup
    history file or the partial last segment of a timeline; anything else is ConfigError (the
    name becomes a key)."""
    match = _NAME_RE.match(name or '') if isinstance(name, str) else None
    if not match:
        raise ConfigError('%r is not the name of a WAL file' % (name,),
                          'PostgreSQL passes %f or %p: a segment such as 000000010000000000000001, '
                          'a NNNNNNNN.history, a ....backup or a ....partial file')
    if match.group('history'):
        return WalFile(name, 'history', int(match.group('history'), 16), None, None)
    segment = match.group('segment')
    kind = 'partial' if match.group('partial') else 'backup' if match.group('offset') else 'segment'
    return WalFile(name, kind, int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16))


def directory(set_name):
    """The key prefix holding a set's WAL."""
    return '%s/%s/' % (WAL_DIR, mf.validate_name(set_name))


class Stored(object):
    """One WAL file as a listing of its set's directory shows it: its manifest, its payloads
    (normally one), and payload uploads a store left behind. ``complete`` as wal-fetch sees it:
    a manifest and a payload (the payload's size is in the manifest, read by those who need it)."""

    def __init__(self, wal_file):
        self.file = wal_file
        self.name = wal_file.name
        self.manifest = None   # ObjectInfo
        self.payloads = []     # ObjectInfo
        self.uploads = []      # ObjectInfo of ``.partial`` uploads

    @property
    def complete(self):
        return self.manifest is not None and bool(self.payloads)

    @property
    def objects(self):
        """Every object of the file, manifest first: the order to delete them in (an interrupted
        deletion leaves a payload without manifest, which nothing takes for an archived file)."""
        return ([self.manifest] if self.manifest else []) + self.payloads + self.uploads

    @property
    def stored_bytes(self):
        return sum(o.size or 0 for o in self.objects)


def parse_key(set_name, key):
    """``(WalFile, role)`` of a key listed under ``directory(set_name)``, role ``manifest``,
    ``payload`` or ``upload``; None for anything else (a listing is input too: such a key was
    never written by wal-push and is never ours to delete)."""
    prefix = directory(set_name)
    if not isinstance(key, str) or not key.startswith(prefix):
        return None
    match = _KEY_RE.match(key[len(prefix):])
    if not match:
        return None
    role = 'manifest' if match.group('manifest') else 'upload' if match.group('upload') else 'payload'
    return parse_name(match.group('name')), role


def list_stored(repo, set_name):
    """The WAL files of ``set_name`` in ``repo`` from one listing: ``({name: Stored}, [keys of
    other objects under the set's WAL directory])``."""
    files, other = {}, []
    for info in repo.list(directory(set_name)):
        parsed = parse_key(set_name, info.key)
        if parsed is None:
            other.append(info.key)
            continue
        wal_file, role = parsed
        stored = files.setdefault(wal_file.name, Stored(wal_file))
        if role == 'manifest':
            stored.manifest = info
        else:
            (stored.payloads if role == 'payload' else stored.uploads).append(info)
    return files, sorted(other)


def manifest_key(set_name, wal_name):
    return directory(set_name) + parse_name(wal_name).name + MANIFEST_EXT


def payload_extension(compression, scheme):
    return PAYLOAD_EXT + COMPRESSION_EXT_FOR[compression] + ENCRYPTION_EXT_FOR[scheme]


def system_identifier(header):
    """The cluster's system identifier from a segment's first page (its long header), as a
    string (it exceeds JSON's safe integers), or None when ``header`` is not such a page."""
    if len(header) < _LONG_HEADER.size:
        return None
    magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(header)
    if not info & _XLP_LONG_HEADER or not sysid:
        return None
    return str(sysid)


def choose_set(sources, wanted=None):
    """The set name whose WAL a job archives: ``wanted`` (``--set``), which must be a set of the
    job, else the job's only ``postgresql_physical`` source."""
    names = [entry['name'] for entry in sources]
    if wanted:
        if wanted not in names:
            raise ConfigError('the job has no backup set %s' % wanted, 'use one of: %s' % ', '.join(sorted(names)))
        return wanted
    physical = [entry['name'] for entry in sources if (entry.get('source') or {}).get('type') == SOURCE_TYPE]
    if len(physical) != 1:
        raise ConfigError('the job has %s %s source%s' % (len(physical) or 'no', SOURCE_TYPE,
                                                          '' if len(physical) == 1 else 's'),
                          'say whose WAL this is with --set NAME (one of: %s)' % ', '.join(sorted(names)))
    return physical[0]


def loads(data, where, set_name, wal_name):
    """A segment manifest read from ``where``, checked: fields present, names its own set and file,
    an artifact of that file. Anything else is IntegrityError (never served)."""
    try:
        manifest = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError('WAL manifest %s is not valid JSON (%s)' % (where, exc),
                             'the object is damaged; another repository may hold a good copy')
    if not isinstance(manifest, dict):
        raise IntegrityError('WAL manifest %s is not a JSON object' % where, 'the object is damaged')
    missing = [k for k in MANIFEST_FIELDS if k not in manifest]
    if missing:
        raise IntegrityError('WAL manifest %s lacks %s' % (where, ', '.join(missing)),
                             'it was not written by offsite.backup or is damaged')
    if not isinstance(manifest['format_version'], int) or manifest['format_version'] > mf.FORMAT_VERSION:
        raise IntegrityError('WAL manifest %s has format version %r; this offsite.backup understands up to %s'
                             % (where, manifest['format_version'], mf.FORMAT_VERSION),
                             'upgrade the offsite.backup collection')
    artifact = manifest['artifact']
    if (manifest['kind'] != KIND or manifest['name'] != set_name or manifest['id'] != wal_name
            or not isinstance(artifact, str) or not artifact.startswith(wal_name)
            or not _ARTIFACT_EXT_RE.match(artifact[len(wal_name):])):
        raise IntegrityError('WAL manifest %s describes %r of set %r (artifact %r), not %s of %s'
                             % (where, manifest['id'], manifest['name'], artifact, wal_name, set_name),
                             'the object was altered or copied; another repository may hold a good copy')
    if not isinstance(manifest.get('compression'), str) or manifest['compression'] not in COMPRESSION_EXT_FOR:
        raise IntegrityError('WAL manifest %s names the compression %r' % (where, manifest.get('compression')),
                             'upgrade the offsite.backup collection')
    return manifest


class _Signed(object):
    """What signing.Verifier checks (a catalog Backup's id, name and manifest), for a WAL file."""

    def __init__(self, set_name, wal_name, manifest):
        self.id, self.name, self.manifest = wal_name, set_name, manifest


class _Payload(object):
    """The raw file compressed, encrypted and hashed once into a private spool file, from which
    every repository reads through its own handle."""

    def __init__(self, path, compression, level, encryption, log):
        self.raw_size = self.size = 0
        self.raw_sha256 = self.sha256 = None
        self.header = b''
        fd, self.spool = tempfile.mkstemp(prefix='offsite-wal-')
        try:
            with open(path, 'rb') as source, os.fdopen(fd, 'wb') as out:
                self.header = source.read(_LONG_HEADER.size)
                source.seek(0)
                raw = HashingReader(source)
                stored = HashingWriter(out)
                with encryption.encrypting(stored) as sink:
                    # threads=0: zstd in this thread; a worker thread's job buffers cost ~16 MiB
                    # of a process started per segment (bench/wal_push_memory.py)
                    compress(raw, sink, compression, level, threads=0)
            self.raw_size, self.raw_sha256 = raw.size, raw.hexdigest()
            self.size, self.sha256 = stored.size, stored.hexdigest()
        except BaseException:
            self.close()
            raise

    def open(self):
        return open(self.spool, 'rb')

    def close(self):
        remove_quietly(self.spool)


def push(set_name, path, repositories, min_success=None, compression='zstd', level=None, encryption=None,
         signing=None, log=None, now=None):
    """Store the WAL file at ``path`` in every repository (each in its own thread); raise unless
    ``min_success`` (default: all) hold it complete. Returns ``{'file', 'raw_sha256',
    'repositories': [{location, status, error?}]}`` with status ``stored``, ``present`` or
    ``failed``."""
    from .signing import Signer
    log = log or CommandLog()
    wal = parse_name(os.path.basename(path))
    if not repositories:
        raise ConfigError('the job lists no repositories to archive WAL into')
    needed = len(repositories) if min_success is None else min_success
    enc = Encryption(encryption, log)
    payload = _Payload(path, compression, level, enc, log)
    try:
        artifact = wal.name + payload_extension(compression, enc.scheme)
        manifest = {
            'format_version': mf.FORMAT_VERSION, 'kind': KIND, 'tool': 'offsite.backup',
            'tool_version': mf.ENGINE_VERSION, 'name': set_name, 'id': wal.name,
            'created': mf.format_time(now or mf.utcnow()), 'artifact': artifact, 'compression': compression,
            'encryption': enc.describe(), 'size': payload.size, 'sha256': payload.sha256,
            'raw_size': payload.raw_size, 'raw_sha256': payload.raw_sha256, 'timeline': wal.timeline,
            'system_identifier': system_identifier(payload.header) if wal.kind in ('segment', 'partial') else None,
        }
        data = mf.dumps(Signer(signing, log).sign(manifest))
        outcomes = [None] * len(repositories)

        def work(index, options):
            # ``repository``: the metrics label (series_name), known before connecting
            outcome = {'type': options.get('type'), 'location': None,
                       'repository': options.get('name') or options.get('type')}
            try:
                store = open_repository(options, log)
                outcome['repository'] = store.series_name()
                with store as repo:
                    outcome['location'] = repo.location(directory(set_name))
                    outcome['status'] = _push_one(repo, set_name, wal.name, artifact, payload, data)
            except BaseException as exc:  # each repository fails alone (a bug in one too)
                error = as_backup_error(exc, 'archiving %s' % wal.name) if not isinstance(exc, BackupError) else exc
                outcome.update(status='failed', error=str(error), error_kind=error.kind)
            outcomes[index] = outcome

        threads = [threading.Thread(target=work, args=(i, o), name='wal-push-%d' % i)
                   for i, o in enumerate(repositories)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        payload.close()
    held = [o for o in outcomes if o['status'] != 'failed']
    result = {'file': wal.name, 'set': set_name, 'raw_sha256': payload.raw_sha256, 'raw_size': payload.raw_size,
              'size': payload.size, 'repositories': outcomes}
    if len(held) < needed:
        conflict = any(o.get('error_kind') == 'integrity' for o in outcomes)
        failures = '; '.join('%s: %s' % (o['location'] or o['type'], o['error'])
                             for o in outcomes if o['status'] == 'failed')
        error_class = IntegrityError if conflict else BackupError
        raise error_class('WAL file %s of set %s is held by %d of %d repositories, %d needed (%s)'
                          % (wal.name, set_name, len(held), len(repositories), needed, failures),
                          'PostgreSQL keeps the file and retries', details=result)
    return result


def _push_one(repo, set_name, wal_name, artifact, payload, data):
    """``present`` when ``repo`` already holds the file complete with the same raw checksum,
    else write the payload, then the manifest: ``stored``. A different checksum there is
    IntegrityError: nothing is overwritten."""
    prefix = directory(set_name)
    key = prefix + wal_name + MANIFEST_EXT
    if repo.stat(key) is not None:
        where = repo.location(key)
        existing = loads(repo.get_bytes(key), where, set_name, wal_name)
        if existing['raw_sha256'] != payload.raw_sha256 or existing['raw_size'] != payload.raw_size:
            facts = (where, wal_name, existing['raw_sha256'], existing['raw_size'], payload.raw_sha256,
                     payload.raw_size)
            raise IntegrityError('%s already holds %s with a different content (sha256 %s, %s bytes; this one: '
                                 'sha256 %s, %s bytes)' % facts,
                                 'another cluster archives into the set %s, or the archive was altered; '
                                 'nothing was overwritten' % set_name)
        stored = repo.stat(prefix + existing['artifact'])
        if stored is not None and stored.size == existing['size']:
            return 'present'
    with payload.open() as reader:
        repo.put(prefix + artifact, reader, payload.size, payload.sha256)
    repo.put_bytes(key, data)
    return 'stored'


class NotArchived(BackupError):
    """No repository holds the file (each answered): PostgreSQL's normal end of the archive."""
    kind = 'not_found'


class Session(object):
    """Repositories kept connected over many fetches (the prefetcher's): ``fetch(..., session=)``.
    A repository that failed is connected afresh on its next use."""

    def __init__(self, log=None):
        self.log = log
        self.open = {}

    def repository(self, index, options, log):
        repo = self.open.get(index)
        if repo is None:
            repo = open_repository(options, log)
            repo.__enter__()
            self.open[index] = repo
        return _Kept(self, index, repo)

    def drop(self, index):
        repo = self.open.pop(index, None)
        if repo is not None:
            try:
                repo.__exit__(None, None, None)
            except Exception:
                pass

    def close(self):
        for index in list(self.open):
            self.drop(index)


class _Kept(object):
    def __init__(self, session, index, repo):
        self.session, self.index, self.repo = session, index, repo

    def __enter__(self):
        return self.repo

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.session.drop(self.index)
        return False


def fetch(set_name, wal_name, dest, repositories, encryption=None, signing=None, log=None, system_identifier=None,
          session=None):
    """Write the WAL file ``wal_name`` of ``set_name`` to ``dest``, proven, from the first
    repository (in order) with a good copy. NotArchived when every repository answered without
    it; any other BackupError when none had a good copy and one failed (unreachable, damaged,
    undecryptable, unsigned, or a segment of another cluster than ``system_identifier``, the
    one the restore recovers). Returns ``{'file', 'location', 'raw_size', 'problems'}``.
    ``session``: a Session keeping the repositories connected (the prefetcher's)."""
    from .signing import Verifier
    log = log or CommandLog()
    wal = parse_name(wal_name)
    if not repositories:
        raise ConfigError('the job lists no repositories to fetch WAL from')
    enc = Encryption(encryption, log)
    verifier = Verifier(signing, log)
    key = manifest_key(set_name, wal.name)
    problems = []
    for index, options in enumerate(repositories):
        location = options.get('type')
        try:
            with (session.repository(index, options, log) if session else open_repository(options, log)) as repo:
                location = repo.location(key)
                # a listing fails where the repository itself is missing (an unmounted disk, a
                # deleted bucket), where a stat only says "no such object": only then is it absent
                if repo.stat(key) is None and not [o for o in repo.list(key) if o.key == key]:
                    continue
                manifest = loads(repo.get_bytes(key), location, set_name, wal.name)
                verifier.check(_Signed(set_name, wal.name, manifest), 'WAL file %s' % location)
                _check_cluster(manifest, system_identifier, location)
                raw_size = _fetch_one(repo, directory(set_name) + manifest['artifact'], manifest, dest, enc,
                                      repo.location(directory(set_name) + manifest['artifact']))
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            error = exc if isinstance(exc, BackupError) else as_backup_error(exc, 'fetching %s' % wal.name)
            problems.append({'location': location, 'error': str(error), 'error_kind': error.kind})
            continue
        return {'file': wal.name, 'location': location, 'raw_size': raw_size, 'problems': problems}
    if problems:
        first = problems[0]
        raise _failure(first['error_kind'])(
            'no good copy of WAL file %s of set %s: %s' % (
                wal.name, set_name, '; '.join('%s: %s' % (p['location'], p['error']) for p in problems)),
            'recovery stops here rather than end early; fix the repository or the keys and start it again',
            details={'problems': problems})
    raise NotArchived('no repository holds WAL file %s of set %s' % (wal.name, set_name))


def _check_cluster(manifest, expected, where):
    """A segment of another cluster is the wrong archive, not the end of the right one (PostgreSQL
    would only log it and end recovery there)."""
    found = manifest.get('system_identifier')
    if expected and found and str(found) != str(expected):
        raise IntegrityError('%s is WAL of another cluster (system identifier %s; the restore recovers %s)'
                             % (manifest.get('id'), found, expected),
                             'another cluster archives into this set, or the wrong set was given')


def _failure(kind):
    for cls in (IntegrityError, ConfigError):
        if cls.kind == kind:
            return cls
    return BackupError


def _fetch_one(repo, payload_key, manifest, dest, enc, where):
    """Decrypt and decompress the payload into ``dest`` through a partial file beside it, renamed
    once the stored and the raw size and sha256 are the manifest's."""
    enc.check_backup(manifest.get('encryption'), where)
    partial = '%s.%s%s' % (dest, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
    raw = hashlib.sha256()
    try:
        with repo.get(payload_key) as reader:
            dummy, dummy, raw_size = fetch_verified(reader, partial, manifest['compression'], manifest['size'],
                                                    manifest['sha256'], where, decrypter(enc, manifest, where),
                                                    tap=raw.update)
        if raw_size != manifest['raw_size'] or raw.hexdigest() != manifest['raw_sha256']:
            raise IntegrityError('%s decompresses to %d bytes with sha256 %s; its manifest records %s bytes, sha256 %s'
                                 % (where, raw_size, raw.hexdigest(), manifest['raw_size'], manifest['raw_sha256']),
                                 'the copy is damaged; another repository may hold a good copy')
        os.rename(partial, dest)
    except BaseException:
        remove_quietly(partial)
        raise
    return raw_size
