# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backblaze B2 through its native API (b2sdk).

Small objects go up in one ``b2_upload_file``; larger ones as B2 large files whose parts are
filled from the stream one buffer at a time (B2 needs each part's Content-Length up front).
b2sdk sends each part's SHA-1 and checks it against B2's answer; when the reader can be
rewound (a file) or upload names the local artifact file the whole file's SHA-1 is computed first and sent as the
``large_file_sha1`` file info. Our sha256 travels as the ``sha256`` file info.

Retries are b2sdk's job, checked in b2sdk 2.x: ``B2Http`` retries 429/503 and connection
errors with backoff, and ``UploadManager`` retries an upload or a part up to five times on a
fresh upload URL when B2 answers that the URL expired or is busy (``should_retry_upload``).

B2 keeps every version of a name: ``delete`` removes all versions (a hidden file still costs
money and is not deleted), unless ``hide_only`` asks for a hide marker instead.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import hashlib

from ..errors import ConfigError, DependencyError, IntegrityError, NotFoundError, RepositoryError
from ..schema import Option
from .base import B2_CREDENTIALS, ROOT_IN_BUCKET, LocalFileStore, ObjectInfo, PutResult, Repository, checked_key

MIB = 1024 * 1024
MAX_PARTS = 10000
REALM = 'production'

# Test hook: a callable returning a b2sdk ``B2Api`` (authorized or not; the repository always
# authorizes it with its own key). None builds a real one. Tests put an api backed by b2sdk's
# RawSimulator here so that the engine's operations reach the simulator.
API_FACTORY = None

# the application key capability each verb needs, for "the key lacks X" messages
_CAPABILITY = {'uploading': 'writeFiles', 'downloading': 'readFiles', 'inspecting': 'listFiles',
               'listing': 'listFiles', 'deleting': 'deleteFiles', 'hiding': 'writeFiles',
               'finding the bucket': 'listBuckets'}


def _b2():
    """b2sdk's api classes and exceptions, imported on first use."""
    try:
        from b2sdk.v2 import B2Api, InMemoryAccountInfo
        from b2sdk.v2 import exception as b2exc
    except ImportError:
        raise DependencyError(
            'the Python library b2sdk is missing on this node (needed for b2 repositories)',
            'pip install b2sdk into the interpreter that runs the modules '
            '(ansible_python_interpreter), e.g. the offsite.backup.client role\'s virtualenv')
    return B2Api, InMemoryAccountInfo, b2exc


def _rewindable(reader):
    """``reader`` if it is a seekable file, or None."""
    try:
        return reader if reader.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _sha1_ahead(reader, size, local=None):
    """SHA-1 of the first ``size`` bytes of the file ``local`` (its own handle), else of the
    next ``size`` bytes of a rewindable reader, which is left where it was; else None."""
    if local is not None:
        with open(local, 'rb') as ahead:
            return _sha1_of(ahead, size)
    source = _rewindable(reader)
    if source is None:
        return None
    start = source.tell()
    try:
        return _sha1_of(source, size)
    finally:
        source.seek(start)


def _sha1_of(source, size):
    digest, missing = hashlib.sha1(), size
    while missing > 0:
        data = source.read(min(MIB, missing))
        if not data:
            break
        digest.update(data)
        missing -= len(data)
    return digest.hexdigest()


class _Sha1Reader(object):
    """Passes reads through, hashing (SHA-1) and counting what went out."""

    def __init__(self, source):
        self.source = source
        self.sha1 = hashlib.sha1()
        self.size = 0

    def read(self, size=-1):
        data = self.source.read(size)
        self.sha1.update(data)
        self.size += len(data)
        return data

    def readable(self):
        return True


class B2Repository(LocalFileStore, Repository):
    type = 'b2'
    DESCRIPTION = ('C(b2) is Backblaze B2 through its native API (the Python library C(b2sdk)).',)
    OPTIONS = ROOT_IN_BUCKET + B2_CREDENTIALS + (
        Option('hide_only', 'bool', description=[
            'Deleting a backup only hides its files instead of deleting every version of '
            'them. Hidden files are still stored and billed until a bucket lifecycle rule removes '
            'them; use this with keys that lack C(deleteFiles).',
            'Defaults to C(false).']),
        Option('part_size', 'int', description=[
            'The part size of B2 large files in MiB; defaults to the account\'s recommended '
            'part size (100 MB); memory used is about part size times (concurrency + 1).']),
        Option('concurrency', 'int', default=4, description='Parts uploaded in parallel.'),
    )

    def __init__(self, options, log=None, api=None):
        super(B2Repository, self).__init__(options, log)
        self.bucket_name = self.options['bucket']
        self.prefix = self.options.get('prefix', '').strip('/')
        self.hide_only = bool(self.options.get('hide_only', False))
        self.part_size = int(self.options['part_size']) * MIB if self.options.get('part_size') else None
        self.concurrency = int(self.options.get('concurrency', 4))
        if self.part_size is not None and self.part_size < 1:
            raise ConfigError('part_size must be at least 1 (MiB); B2 itself asks for 5')
        if self.concurrency < 1:
            raise ConfigError('concurrency must be at least 1')
        self._api = api
        self._bucket = None

    # -- connection ---------------------------------------------------------------------
    def location(self, key=''):
        path = '/'.join(p for p in (self.prefix, key) if p)
        return 'b2://%s/%s' % (self.bucket_name, path)

    def _name(self, key):
        checked_key(key)
        return '%s/%s' % (self.prefix, key) if self.prefix else key

    @property
    def bucket(self):
        if self._bucket is None:
            b2exc = _b2()[2]
            key_id, key = self.options.get('key_id'), self.options.get('application_key')
            if not key_id or not key:
                raise ConfigError('a b2 repository needs key_id and application_key',
                                  'set them (or B2_APPLICATION_KEY_ID/B2_APPLICATION_KEY)')
            api = self._api
            if api is None:
                if API_FACTORY is not None:
                    api = API_FACTORY()
                else:
                    B2Api, InMemoryAccountInfo = _b2()[:2]
                    api = B2Api(InMemoryAccountInfo())
            try:
                api.authorize_account(REALM, key_id, key)
            except (b2exc.Unauthorized, b2exc.InvalidAuthToken, b2exc.AccessDenied) as exc:
                raise RepositoryError('B2 refused the application key %s (%s)' % (key_id, _reason(exc)),
                                      'check key_id/application_key; the key may have been deleted or expired')
            except b2exc.B2ConnectionError as exc:
                raise RepositoryError('cannot reach Backblaze B2 to authorize (%s)' % exc,
                                      'check DNS, the network and any proxy')
            except b2exc.B2Error as exc:
                raise RepositoryError('B2 refused to authorize the application key %s (%s)' % (key_id, _reason(exc)))
            self._api = api
            with self._errors('finding the bucket'):
                self._bucket = self._find_bucket(api)
        return self._bucket

    def _find_bucket(self, api):
        # a key restricted to one bucket names it in its authorization: no listBuckets needed
        # (b2sdk.v2 keeps bucketId/bucketName, the v3 interface a list of buckets)
        allowed = api.account_info.get_allowed() or {}
        buckets = list(allowed.get('buckets') or [])
        if allowed.get('bucketId'):
            buckets.append({'id': allowed['bucketId'], 'name': allowed.get('bucketName')})
        for restriction in buckets:
            if restriction.get('name') == self.bucket_name and restriction.get('id'):
                return api.BUCKET_CLASS(api, restriction['id'], name=self.bucket_name)
        return api.get_bucket_by_name(self.bucket_name)

    @contextlib.contextmanager
    def _errors(self, doing, key=''):
        """Turn b2sdk's exceptions into messages an operator can act on."""
        b2exc = _b2()[2]
        try:
            yield
        except (b2exc.NonExistentBucket, b2exc.RestrictedBucket):
            raise NotFoundError('bucket %s does not exist (or the key cannot see it)' % self.bucket_name,
                                'create it, fix `bucket`, or use a key that is allowed to use that bucket')
        except b2exc.FileNotPresent:
            raise NotFoundError('%s does not exist' % self.location(key))
        except (b2exc.Unauthorized, b2exc.AccessDenied) as exc:
            capability = _CAPABILITY.get(doing)
            raise RepositoryError('B2 refused %s %s with this application key (%s)'
                                  % (doing, self.location(key), _reason(exc)),
                                  'give the key the %s capability for this bucket and prefix' % capability
                                  if capability else 'check the key\'s capabilities, bucket and name prefix')
        except b2exc.B2ConnectionError as exc:
            raise RepositoryError('cannot reach Backblaze B2 while %s %s (%s)' % (doing, self.location(key), exc),
                                  'check DNS, the network and any proxy')
        except b2exc.B2Error as exc:
            raise RepositoryError('B2 error while %s %s: %s' % (doing, self.location(key), _reason(exc)))

    def _part_size(self, size):
        minimum = self._api.account_info.get_absolute_minimum_part_size()
        part = self.part_size or self._api.account_info.get_recommended_part_size()
        if part < minimum:
            raise ConfigError('part_size %d MiB is below B2\'s minimum part size of %d bytes'
                              % (part // MIB, minimum), 'raise part_size (B2 wants at least 5 MiB)')
        # stay under B2's 10,000-part limit however large the artifact grows
        return max(part, -(-size // MAX_PARTS))

    # -- the five verbs -----------------------------------------------------------------
    def put(self, key, reader, size, sha256, local=None):
        bucket = self.bucket
        name = self._name(key)
        part = self._part_size(size)
        info = {'sha256': sha256}
        large = size > part
        large_sha1 = _sha1_ahead(reader, size, local) if large else None
        sent = _Sha1Reader(reader)
        try:
            with self._errors('uploading', key):
                # buffers_count buffers of one part each: one is filled from the stream while
                # the others are being sent; memory is part size x (concurrency + 1)
                version = bucket.upload_unbound_stream(
                    sent, name, content_type='application/octet-stream', file_info=info,
                    recommended_upload_part_size=part, min_part_size=part, buffer_size=part,
                    buffers_count=self.concurrency + 1, read_size=MIB, large_file_sha1=large_sha1)
        except BaseException:
            self._cancel_unfinished(name, sha256)
            raise
        try:
            self.check_landed(key, size, sha256, sent.size)
            self.check_landed(key, size, sha256, version.size)
            if (version.file_info or {}).get('sha256') != sha256:
                raise RepositoryError('%s was stored without its sha256 file info' % self.location(key))
            ours = sent.sha1.hexdigest()
            if large:
                if large_sha1 is not None and large_sha1 != ours:
                    raise IntegrityError('%s changed while it was being uploaded to %s'
                                         % (local or getattr(reader, 'name', 'the artifact'), self.location(key)),
                                         'nothing was marked complete; run the upload again')
                # B2 checked every part against the SHA-1 b2sdk sent with it
                verification = 'sha1 per part' + (' + large_file_sha1' if large_sha1 else '')
            else:
                if version.content_sha1 not in (ours, 'unverified:%s' % ours):
                    raise IntegrityError('%s landed with SHA-1 %s, %s was sent'
                                         % (self.location(key), version.content_sha1, ours),
                                         'the upload was damaged; it was not marked complete, run it again')
                verification = 'sha1'
        except BaseException:
            self._discard(version, name)
            raise
        return PutResult(key, size, sha256, verification if self.verify == 'full' else 'size')

    def _discard(self, version, name):
        """Remove a version that failed its proof; a key without deleteFiles hides it instead.
        The proof's error is what the caller reports, not a failure here."""
        try:
            bucket = self.bucket
            try:
                bucket.delete_file_version(version.id_, name)
            except _b2()[2].B2Error:
                bucket.hide_file(name)
        except Exception:
            pass

    def _cancel_unfinished(self, name, sha256):
        """An interrupted large upload leaves parts B2 bills for: cancel ours."""
        try:
            for unfinished in self.bucket.list_unfinished_large_files(prefix=name):
                if unfinished.file_name == name and (unfinished.file_info or {}).get('sha256') == sha256:
                    self._api.cancel_large_file(unfinished.file_id)
        except Exception:
            pass

    @contextlib.contextmanager
    def get(self, key):
        bucket = self.bucket
        with self._errors('downloading', key):
            downloaded = bucket.download_file_by_name(self._name(key))
        response = downloaded.response
        try:
            yield _ChunkReader(response.iter_content(MIB), self, key)
        finally:
            response.close()

    def list(self, prefix):
        bucket = self.bucket
        # start at the prefix, as b2sdk's Bucket.ls does (its simulator stops at the first
        # name outside the prefix when it starts before it)
        found, start = [], self._name(prefix) or None
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors('listing', prefix):
            while True:
                page = self._api.session.list_file_names(bucket.id_, start, 1000, self._name(prefix))
                for item in page['files']:
                    if item.get('action', 'upload') != 'upload':
                        continue
                    found.append(ObjectInfo(item['fileName'][strip:], item.get('contentLength', item.get('size')),
                                            _when(item.get('uploadTimestamp')), item.get('fileInfo') or {}))
                start = page.get('nextFileName')
                if not start:
                    return found

    def stat(self, key):
        # b2_list_file_names shows only visible files (not hidden ones, unlike a HEAD by name
        # in b2sdk's simulator) and carries the file info: one call, no download
        bucket = self.bucket
        name = self._name(key)
        with self._errors('inspecting', key):
            page = self._api.session.list_file_names(bucket.id_, name, 1, name)
        for item in page['files']:
            if item['fileName'] == name and item.get('action', 'upload') == 'upload':
                return ObjectInfo(key, item.get('contentLength', item.get('size')),
                                  _when(item.get('uploadTimestamp')), dict(item.get('fileInfo') or {}))
        return None

    def delete(self, key):
        bucket = self.bucket
        name = self._name(key)
        if self.hide_only:
            if self.stat(key) is None:
                return
            with self._errors('hiding', key):
                bucket.hide_file(name)
            return
        with self._errors('listing', key):
            versions = list(bucket.list_file_versions(name))
        for version in versions:
            with self._errors('deleting', key):
                try:
                    bucket.delete_file_version(version.id_, name)
                except _b2()[2].FileNotPresent:
                    pass  # deleted meanwhile by someone else: what we wanted

    def close(self):
        self._bucket = None
        self._api = None


def _reason(exc):
    return str(exc).strip() or exc.__class__.__name__


def _when(timestamp_ms):
    import datetime
    if timestamp_ms is None:
        return None
    return datetime.datetime.fromtimestamp(int(timestamp_ms) / 1000.0, tz=datetime.timezone.utc)


class _ChunkReader(object):
    """A ``read(n)`` reader over a download's chunk iterator; only one chunk in memory."""

    def __init__(self, chunks, repo, key):
        self.chunks, self.repo, self.key = chunks, repo, key
        self.buffer = b''
        self.done = False

    def _next(self):
        with self.repo._errors('downloading', self.key):
            try:
                return next(self.chunks, b'')
            except (IOError, OSError) as exc:
                raise RepositoryError('download of %s broke off: %s' % (self.repo.location(self.key), exc))

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self.buffer]
            while not self.done:
                chunk = self._next()
                if not chunk:
                    self.done = True
                parts.append(chunk)
            self.buffer = b''
            return b''.join(parts)
        while len(self.buffer) < size and not self.done:
            chunk = self._next()
            if not chunk:
                self.done = True
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def readable(self):
        return True
