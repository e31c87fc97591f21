# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Amazon S3 and every S3-compatible store (B2's S3 API, Wasabi, MinIO, GCS interoperability).

Uploads are multipart with a bounded number of parts in memory. Each part is proven once in
transit: by its Content-MD5 where the request body is not signed (https), or by the SHA-256
that botocore's SigV4 signature computes over the body and the store checks (plain http, where
botocore always signs the payload: an MD5 on top would prove the same bytes twice). The final
ETag of a multipart object (md5 of the part md5s, ``-N``) is recomputed here from the part
md5s (ours, or the store's ETags of parts it checked against the signed hash) to prove the
whole object is those parts. Our own sha256 travels in the object metadata when it is known before the
upload starts (not for a dump streamed while it is written: its manifest carries it).
Parts in memory are bounded per upload (``concurrency``) and across the uploads of a process
(``SENDING``), so several S3 repositories at once cost about the memory of one; a part's buffer
serves the next part (``PARTS``), so the allocator does not keep every part it ever freed.

Object Lock (``object_lock_mode`` + ``object_lock_days``) puts a retention on every object it
writes, so that a thief holding this key cannot delete recent backups. "Deleting" a key deletes
every version of it (and its delete markers): on a versioned bucket a plain DELETE only hides the
object behind a marker, and the bucket owner would still pay for it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import contextlib
import datetime
import hashlib
import threading

from ..errors import ConfigError, DependencyError, NotFoundError, RepositoryError, UnreachableError
from ..schema import Option
from .base import (AWS_CREDENTIALS, ROOT_IN_BUCKET, ObjectInfo, PutResult, RangedReads, Repository, StreamingStore,
                   checked_key, redact_url)

MIB = 1024 * 1024
MIN_PART = 5 * MIB            # S3's floor for every part but the last
MAX_PARTS = 10000
MAX_BACKOFF = 20              # botocore's standard retry mode: longest sleep between tries
LOCK_MODES = ('governance', 'compliance')
_AUTH_CODES = ('InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken',
               'ExpiredToken', 'AuthorizationHeaderMalformed', '403')


def _boto():
    """botocore, imported on first use: it takes most of a second to import, and a task that
    never touches S3 should not pay for that. boto3 itself is not imported: the engine makes its
    own uploads (multipart, checksums) on a botocore client, and boto3's import (s3transfer and
    its resources) adds ~3 MiB to a process that wal-push starts once per WAL segment
    (bench/wal_push_memory.py)."""
    try:
        import botocore.config
        import botocore.exceptions
        import botocore.session
    except ImportError:
        raise DependencyError(
            'the Python library boto3 (botocore) is missing on this node (needed for s3 repositories)',
            'pip install boto3 into the interpreter that runs the modules '
            '(ansible_python_interpreter), e.g. the offsite.backup.client role\'s virtualenv')
    return botocore


_LOADER = []
_LOADER_LOCK = threading.Lock()


def _session():
    """A botocore session of its own (credentials resolved per repository, as before) whose data
    loader is shared by every S3 repository of this process, so the S3 service model is parsed
    once: a new loader per repository cost ~0.1 CPU s and ~13 MiB each."""
    core = _boto().session.Session()
    with _LOADER_LOCK:
        if _LOADER:
            core.register_component('data_loader', _LOADER[0])
        else:
            _LOADER.append(core.get_component('data_loader'))
    return core


def checksum_setting(endpoint_url, requested='auto'):
    """botocore 1.36+ sends CRC checksums by default, which many S3-compatible stores reject.
    ``auto`` keeps them for AWS and asks for them only when required elsewhere."""
    if requested != 'auto':
        return requested
    if not endpoint_url or '.amazonaws.com' in endpoint_url:
        return 'when_supported'
    return 'when_required'


class S3Repository(StreamingStore, RangedReads, Repository):
    type = 's3'
    DESCRIPTION = ('C(s3) is Amazon S3 or any S3-compatible store (Backblaze B2\'s S3 API, Wasabi, MinIO, '
                   'Google Cloud Storage interoperability with HMAC keys).',)
    OPTIONS = ROOT_IN_BUCKET + (
        Option('endpoint_url', env='AWS_ENDPOINT_URL', description='URL of an S3-compatible endpoint; omit for AWS.'),
    ) + AWS_CREDENTIALS + (
        Option('storage_class', description=[
            'Storage class of uploaded artifacts, for example C(STANDARD_IA). '
            'Manifests always stay in the default class so that listing and restore can read them.']),
        Option('server_side_encryption', description='Server-side encryption requested for uploads, for example C(AES256).'),
        Option('object_lock_mode', choices=LOCK_MODES, description=[
            'Put an Object Lock retention on every uploaded object, so that nobody holding '
            'this key can delete or overwrite a backup for O(.object_lock_days) days.',
            'C(governance) can be lifted by a principal with C(s3:BypassGovernanceRetention); '
            'C(compliance) by nobody, not even the account root, until it expires.',
            'Needs a bucket created with Object Lock (see M(offsite.backup.s3_bucket)); the upload '
            'fails before sending anything otherwise. Retention skips backups still locked and '
            'reports them under RV(offsite.backup.retention#module:locked).']),
        Option('object_lock_days', 'int', description=[
            'Days each uploaded object stays locked; required with O(.object_lock_mode).',
            'Retention extends the lock of backups it keeps as monthly or yearly copies for as long '
            'as the policy keeps them.']),
        Option('part_size', 'int', default=8, description=[
            'Multipart part size in MiB; at least 5. Memory used is about '
            'O(.part_size) times O(.concurrency).']),
        Option('concurrency', 'int', default=4, description='Parts uploaded in parallel.'),
        Option('checksums', choices=('auto', 'when_required', 'when_supported'), description=[
            'Whether botocore computes and validates its own request/response checksums.',
            'C(auto) (the default) keeps botocore\'s default for AWS and uses C(when_required) for any other '
            'O(.endpoint_url), because many S3-compatible stores reject the checksum '
            'headers botocore 1.36+ sends by default.']),
    )

    def __init__(self, options, log=None):
        super(S3Repository, self).__init__(options, log)
        self.bucket = self.options['bucket']
        self.prefix = self.options.get('prefix', '').strip('/')
        self.endpoint_url = self.options.get('endpoint_url')
        self.endpoint_shown = redact_url(self.endpoint_url)  # what messages and results show
        self.part_size = int(self.options.get('part_size', 8)) * MIB
        self.concurrency = int(self.options.get('concurrency', 4))
        if self.part_size < MIN_PART:
            raise ConfigError('part_size must be at least 5 (MiB)', 'S3 refuses smaller parts')
        if self.concurrency < 1:
            raise ConfigError('concurrency must be at least 1')
        self.checksums = checksum_setting(self.endpoint_url, self.options.get('checksums', 'auto'))
        self.lock_mode = self.options.get('object_lock_mode')
        self.lock_days = self.options.get('object_lock_days')
        if self.lock_mode is not None and self.lock_mode not in LOCK_MODES:
            raise ConfigError('object_lock_mode: %r is not known' % (self.lock_mode,),
                              'use one of: %s' % ', '.join(LOCK_MODES))
        if (self.lock_mode is None) != (self.lock_days is None):
            raise ConfigError('object_lock_mode and object_lock_days go together',
                              'set both to lock every uploaded object, or neither')
        if self.lock_days is not None and int(self.lock_days) < 1:
            raise ConfigError('object_lock_days must be at least 1')
        self._client = None
        self._bucket_locks = None  # does the bucket have Object Lock? asked once, on first need
        self._versioned = None  # has the bucket ever had versioning on? asked once, on the first delete

    # -- connection ---------------------------------------------------------------------
    def client_config(self):
        botocore = _boto()
        params = dict(
            region_name=self.options.get('region'),
            retries={'total_max_attempts': self.retries + 1, 'mode': 'standard'},
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            max_pool_connections=self.concurrency + 4,
            s3={'addressing_style': 'path' if self.endpoint_url else 'auto'},
            request_checksum_calculation=self.checksums,
            response_checksum_validation=self.checksums,
        )
        try:
            return botocore.config.Config(**params)
        except TypeError:  # botocore older than 1.36 has neither setting nor the default
            del params['request_checksum_calculation'], params['response_checksum_validation']
            return botocore.config.Config(**params)

    def longest_wait(self):
        """Each try may wait ``timeout`` to connect and ``timeout`` for an answer; botocore's
        standard mode sleeps at most min(2 ** i, 20) s before retry i."""
        return (self.retries + 1) * 2 * self.timeout + sum(min(2 ** i, MAX_BACKOFF) for i in range(self.retries))

    @property
    def client(self):
        if self._client is None:
            # what boto3.session.Session(keys, region).client('s3', ...) does, without boto3
            session = _session()
            keys = (self.options.get('access_key'), self.options.get('secret_key'), self.options.get('session_token'))
            if any(keys):
                session.set_credentials(*keys)
            if self.options.get('region') is not None:
                session.set_config_variable('region', self.options.get('region'))
            self._client = session.create_client('s3', endpoint_url=self.endpoint_url, config=self.client_config())
        return self._client

    def location(self, key=''):
        path = '/'.join(p for p in (self.prefix, key) if p)
        where = 's3://%s/%s' % (self.bucket, path)
        return '%s at %s' % (where, self.endpoint_shown) if self.endpoint_url else where

    def _key(self, key):
        checked_key(key)
        return '%s/%s' % (self.prefix, key) if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, doing, key=''):
        """Turn boto's exceptions into messages an operator can act on."""
        botocore = _boto()
        try:
            yield
        except botocore.exceptions.NoCredentialsError:
            raise ConfigError('no S3 credentials for %s' % self.location(),
                              'set access_key/secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)')
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError) as exc:
            raise UnreachableError('cannot reach the S3 endpoint %s while %s %s (%s)'
                                   % (self.endpoint_shown or 'of AWS', doing, self.location(key), type(exc).__name__),
                                   'check endpoint_url, DNS and the network; ' + self.unreachable_hint())
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get('Error', {}).get('Code', ''))
            status = exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
            if code == 'NoSuchBucket':
                raise NotFoundError('bucket %s does not exist%s' % (
                    self.bucket, ' at %s' % self.endpoint_shown if self.endpoint_url else ''),
                    'create it or fix `bucket`')
            if code in _AUTH_CODES or status == 403:
                raise RepositoryError('the S3 endpoint refused the credentials while %s %s (%s)'
                                      % (doing, self.location(key), code),
                                      'check access_key/secret_key and the key\'s permissions on the bucket')
            if code in ('NoSuchKey', '404'):
                raise NotFoundError('%s does not exist' % self.location(key))
            if code == 'InvalidObjectState':
                raise RepositoryError('%s is in an archive storage class (GLACIER or DEEP_ARCHIVE) and cannot be '
                                      'read directly' % self.location(key),
                                      'restore it first (aws s3api restore-object), wait until it is readable, retry')
            if code == 'InvalidRequest' and 'lock' in str(exc).lower():
                raise self._no_lock_error()
            raise RepositoryError('S3 error while %s %s: %s' % (doing, self.location(key), self.scrub(exc)))
        except botocore.exceptions.BotoCoreError as exc:
            raise RepositoryError('S3 error while %s %s: %s' % (doing, self.location(key), self.scrub(exc)))

    # -- the five verbs -----------------------------------------------------------------
    def put(self, key, reader, size, sha256):
        # our sha256 in the metadata when it is known before the first byte (not for a stream:
        # its manifest, written last, carries it)
        extra = {'Metadata': {'sha256': sha256}} if sha256 else {}
        if self.options.get('storage_class') and not key.endswith('.json'):
            extra['StorageClass'] = self.options['storage_class']  # manifests stay readable
        if self.options.get('server_side_encryption'):
            extra['ServerSideEncryption'] = self.options['server_side_encryption']
        if self.lock_mode:
            if self.bucket_has_locks() is False:
                raise self._no_lock_error()  # before a single byte is sent
            extra['ObjectLockMode'] = self.lock_mode.upper()
            extra['ObjectLockRetainUntilDate'] = _now() + datetime.timedelta(days=int(self.lock_days))
        part_size = self._part_sizes(size)
        sent = self.sending(reader, size)
        with self._errors('uploading', key):
            first = read_part(sent, part_size(1))
            if len(first) < part_size(1) or size == part_size(1):
                etag, expected = self._put_single(key, first, extra)
            else:
                # hand the first part over in a list: a local name here would keep it in
                # memory for the whole upload
                pending, first = [first], None
                etag, expected = self._put_multipart(key, pending, sent, part_size, extra)
            landed = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            if self.lock_mode and not landed.get('ObjectLockRetainUntilDate'):
                # some stores drop the lock headers of a multipart upload: set it on the version now
                self._retain(key, landed.get('VersionId'), self.lock_mode.upper(), extra['ObjectLockRetainUntilDate'])
        if size is None:
            size, sha256 = sent.size, sent.hexdigest()
        elif landed.get('Metadata', {}).get('sha256') != sha256:
            raise RepositoryError('%s was stored without its sha256 metadata' % self.location(key),
                                  'the store drops user metadata; it cannot be used as is')
        self.check_landed(key, size, sha256, landed['ContentLength'])
        verification = 'size'
        if self.verify == 'full':
            if etag.strip('"') == expected:
                verification = 'md5 per part + etag' if self.md5_per_part() else 'sha256 per part (SigV4) + etag'
            else:
                # ETag is not an MD5 here (SSE-KMS, some compatible stores): read it back
                with self.get(key) as body:
                    digest, count = hashlib.sha256(), 0
                    for chunk in iter(lambda: body.read(MIB), b''):
                        digest.update(chunk)
                        count += len(chunk)
                self.check_landed(key, size, sha256, count, digest.hexdigest())
                verification = 'sha256 re-read'
        return PutResult(key, size, sha256, verification)

    def _part_sizes(self, size):
        """Part number -> part size, under S3's 10,000-part limit however large the artifact.
        Of a known size: one size for all. Of an unknown size (a stream), parts double in size
        every 1,000 (S3 lets parts differ): 8 MiB parts reach about 8 TB."""
        if size is not None:
            fixed = max(self.part_size, -(-size // MAX_PARTS))
            return lambda number: fixed
        return lambda number: self.part_size * 2 ** ((number - 1) // (MAX_PARTS // 10))

    def signs_payload(self):
        """Whether botocore signs every request body with SHA-256 (SigV4), which the store
        checks: always over plain http (botocore's S3 signer), unless botocore adds checksums
        of its own (``checksums: when_supported``), which change how it signs. Then a
        Content-MD5 would prove the same bytes a second time and is left out."""
        return bool(self.endpoint_url) and not self.endpoint_url.lower().startswith('https:') \
            and self.checksums == 'when_required'

    def md5_per_part(self):
        """Whether each part carries its Content-MD5: not where the signature already proves
        it (``signs_payload``), except under Object Lock, which S3 refuses without one."""
        return not self.signs_payload() or bool(self.lock_mode)

    def _part_md5(self, data):
        """{'ContentMD5': ...} and the part's md5 digest, or ({}, None) (``md5_per_part``)."""
        if not self.md5_per_part():
            return {}, None
        md5 = hashlib.md5(data).digest()
        return {'ContentMD5': base64.b64encode(md5).decode()}, md5

    def _put_single(self, key, data, extra):
        header, md5 = self._part_md5(data)
        response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **dict(extra, **header))
        return response['ETag'], (md5 or _etag_md5(response['ETag']) or b'').hex()

    def _put_multipart(self, key, pending, reader, part_size, extra):
        from concurrent.futures import ThreadPoolExecutor
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self._key(key), **extra)['UploadId']
        digests = {}
        # at most `concurrency` parts in memory: a slot is taken before a part is read
        slots = threading.BoundedSemaphore(self.concurrency)
        failure = []
        need = SENDING.register((self.concurrency - 1) * part_size(1))

        def send(number, data):
            try:
                header, md5 = self._part_md5(data)
                response = self.client.upload_part(
                    Bucket=self.bucket, Key=self._key(key), UploadId=upload_id, PartNumber=number,
                    Body=data, **header)
                digests[number] = (response['ETag'], md5 or _etag_md5(response['ETag']))
            except Exception as exc:
                failure.append(exc)
            finally:
                SENDING.give(len(data))
                PARTS.give(data)
                slots.release()

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                number, data = 1, pending.pop()
                slots.acquire()
                while data and not failure:
                    SENDING.take(len(data))
                    pool.submit(send, number, data)
                    number, data = number + 1, None  # the worker holds the part now
                    slots.acquire()
                    data = read_part(reader, part_size(number))
                slots.release()
            if failure:
                raise failure[0]
            parts = [{'PartNumber': n, 'ETag': digests[n][0]} for n in sorted(digests)]
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id,
                MultipartUpload={'Parts': parts})
        except BaseException:
            SENDING.unregister(need)
            # never leave invisible parts behind that the bucket owner pays for
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)
            except Exception:
                pass
            raise
        SENDING.unregister(need)
        if not all(digests[n][1] for n in digests):
            return response['ETag'], None  # a store whose ETags are no md5s: verify re-reads
        combined = hashlib.md5(b''.join(digests[n][1] for n in sorted(digests))).hexdigest()
        return response['ETag'], '%s-%d' % (combined, len(digests))

    @contextlib.contextmanager
    def get(self, key):
        with self._errors('downloading', key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))['Body']
        try:
            yield _ErrorMappingReader(body, self, key)
        finally:
            body.close()

    @contextlib.contextmanager
    def get_range(self, key, start, end):
        with self._errors('downloading', key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range='bytes=%d-%d' % (start, end - 1))
        body = response['Body']
        try:
            if response.get('ContentLength') != end - start:  # a store that ignores Range sends it all
                raise RepositoryError('%s answered %s bytes for the range %d-%d' % (
                    self.location(key), response.get('ContentLength'), start, end - 1),
                    'the store does not serve ranged reads')
            yield _ErrorMappingReader(body, self, key)
        finally:
            body.close()

    def list(self, prefix):
        found = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors('listing', prefix):
            pages = self.client.get_paginator('list_objects_v2').paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get('Contents', []):
                    found.append(ObjectInfo(item['Key'][strip:], item['Size'], item['LastModified']))
        return found

    def stat(self, key):
        try:
            with self._errors('inspecting', key):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return None
        return ObjectInfo(key, head['ContentLength'], head['LastModified'], head.get('Metadata', {}))

    def delete(self, key):
        """Delete every version of ``key``: a version still under Object Lock stays and raises."""
        checked_key(key)  # before the versioning question, not only where the key is sent
        with self._errors('listing versions of', key):
            versions = self._versions(key) if self._bucket_has_versions() else None
        if versions is None:  # no versions, or the key may not list them: delete (or hide) the current one
            with self._errors('deleting', key):
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            return
        for version_id, is_marker in versions:
            try:
                with self._errors('deleting', key):
                    self.client.delete_object(Bucket=self.bucket, Key=self._key(key), VersionId=version_id)
            except RepositoryError:
                until = None if is_marker else self._version_lock(key, version_id)
                if until is not None:
                    raise RepositoryError('%s is under Object Lock until %s and cannot be deleted'
                                          % (self.location(key), _iso(until)),
                                          'it can be deleted after that date; nothing else was changed')
                raise

    def _bucket_has_versions(self):
        """False only when the bucket never had versioning on (every object has one version,
        a plain DELETE removes it): no listing per deleted key then. Some stores list versions
        at a cost that grows with the bucket; a bucket that was versioned once may still hold
        old versions, so anything but a clear "never" lists them."""
        if self._versioned is None:
            botocore = _boto()
            try:
                self._versioned = bool(self.client.get_bucket_versioning(Bucket=self.bucket).get('Status'))
            except botocore.exceptions.ClientError as exc:
                self._versioned = exc.response.get('Error', {}).get('Code') != 'NotImplemented'
        return self._versioned

    def _versions(self, key):
        """[(version id, is delete marker)] of exactly ``key``, or None if listing versions is
        refused (a key without s3:ListBucketVersions)."""
        botocore = _boto()
        full = self._key(key)
        found = []
        try:
            pages = self.client.get_paginator('list_object_versions').paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get('Versions', []):
                    if item['Key'] == full:
                        found.append((item['VersionId'], False))
                for item in page.get('DeleteMarkers', []):
                    if item['Key'] == full:
                        found.append((item['VersionId'], True))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode') == 403:
                return None
            raise
        return found

    def _version_lock(self, key, version_id=None):
        """Retain-until of one version (the current one without ``version_id``) if still in the future."""
        params = dict(Bucket=self.bucket, Key=self._key(key))
        if version_id:
            params['VersionId'] = version_id
        with self._errors('inspecting', key):
            head = self.client.head_object(**params)
        until = head.get('ObjectLockRetainUntilDate')
        return until if until is not None and until > _now() else None

    def bucket_has_locks(self):
        """True or False once known; None when this key may not read the bucket's lock setting."""
        if self._bucket_locks is None:
            botocore = _boto()
            try:
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)
                self._bucket_locks = config.get('ObjectLockConfiguration', {}).get('ObjectLockEnabled') == 'Enabled'
            except botocore.exceptions.ClientError as exc:
                code = str(exc.response.get('Error', {}).get('Code'))
                if 'ObjectLockConfigurationNotFound' in code or code == 'NotImplemented':
                    self._bucket_locks = False  # not set, or a store without Object Lock at all
                elif exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode') != 403:
                    with self._errors('reading the Object Lock setting of'):
                        raise
        return self._bucket_locks

    def _no_lock_error(self):
        return ConfigError('bucket %s does not have Object Lock enabled; object_lock_mode needs a bucket created '
                           'with Object Lock' % self.bucket,
                           'create the bucket with offsite.backup.s3_bucket and object_lock_enabled: true, '
                           'or remove object_lock_mode and object_lock_days')

    def locked_until(self, key):
        if self.bucket_has_locks() is False:
            return None  # a bucket without Object Lock: no need to ask about every version
        with self._errors('listing versions of', key):
            versions = self._versions(key)
        if versions is None:
            return self._version_lock(key)
        dates = [self._version_lock(key, vid) for vid, is_marker in versions if not is_marker]
        dates = [d for d in dates if d is not None]
        return max(dates) if dates else None

    def extend_lock(self, key, until, dry_run=False):
        """Extend the lock of the current version of ``key`` (never shortens it)."""
        if self.bucket_has_locks() is False:
            return None
        with self._errors('inspecting', key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        current = head.get('ObjectLockRetainUntilDate')
        mode = head.get('ObjectLockMode') or (self.lock_mode or '').upper()
        if not mode:
            return None  # not locked, and this repository does not lock: nothing to extend
        if current is not None and current >= until:
            return None
        if not dry_run:
            self._retain(key, head.get('VersionId'), mode, until)
        return until

    def _retain(self, key, version_id, mode, until):
        params = dict(Bucket=self.bucket, Key=self._key(key), Retention={'Mode': mode, 'RetainUntilDate': until})
        if version_id and version_id != 'null':
            params['VersionId'] = version_id
        with self._errors('locking', key):
            self.client.put_object_retention(**params)

    def abort_incomplete_uploads(self, prefix, before, dry_run=False):
        """Abort multipart uploads under ``prefix`` started before ``before`` (a killed upload
        leaves its parts billed but invisible); a key that may not list them aborts nothing."""
        botocore = _boto()
        strip = len(self.prefix) + 1 if self.prefix else 0
        aborted = []
        try:
            pages = self.client.get_paginator('list_multipart_uploads').paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            stale = [item for page in pages for item in page.get('Uploads', []) if item['Initiated'] < before]
        except botocore.exceptions.ClientError as exc:
            if (exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode') == 403
                    or exc.response.get('Error', {}).get('Code') == 'NotImplemented'):
                # a key that may not list them, or a store that cannot (s3rver): the bucket's
                # AbortIncompleteMultipartUpload lifecycle rule is the backstop
                return aborted
            with self._errors('listing incomplete uploads of', prefix):
                raise
        for item in stale:
            if dry_run:
                aborted.append(item['Key'][strip:])
                continue
            with self._errors('aborting the incomplete upload of', item['Key'][strip:]):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=item['Key'], UploadId=item['UploadId'])
            aborted.append(item['Key'][strip:])
        return aborted

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None


def _etag_md5(etag):
    """The md5 digest a single object's or a part's ETag is, or None when it is no md5."""
    text = etag.strip('"')
    try:
        return bytes.fromhex(text) if len(text) == 32 else None
    except ValueError:
        return None


def read_part(reader, size):
    """Up to ``size`` bytes of ``reader`` (fewer only at its end) in one buffer allocated once:
    collecting pieces and joining them would hold every part twice while it is read. A reader
    of known length (a put's, ``_Limited``) holds no more than its ``left``: a small object (a
    manifest, a WAL segment) gets a buffer of its own size, not of a whole part."""
    size = max(0, min(size, getattr(reader, 'left', size)))
    part = PARTS.take(size)
    view, filled = memoryview(part), 0
    while filled < size:
        data = reader.read(min(size - filled, MIB))
        if not data:
            break
        view[filled:filled + len(data)] = data
        filled += len(data)
    view.release()
    del part[filled:]
    return part


class _SendingBudget(object):
    """Bytes of parts being sent by every multipart upload of this process together.

    One upload never waits for it: the budget is the largest in-flight need ((concurrency - 1)
    x part size) of the uploads running. Several uploads at once (one dump to several S3
    repositories) share that, so memory does not grow with the number of repositories. Only
    parts being sent hold budget, and they always finish: a part that was read waits for one
    to finish, never the other way round, so there is no deadlock."""

    def __init__(self):
        self.cond = threading.Condition()
        self.needs = []
        self.used = 0

    def register(self, need):
        with self.cond:
            self.needs.append(need)
        return need

    def unregister(self, need):
        with self.cond:
            self.needs.remove(need)
            if not self.needs:
                PARTS.clear()  # no upload running: their buffers go
            self.cond.notify_all()

    def take(self, size):
        with self.cond:
            while self.used and self.used + size > max(self.needs or [0]):
                self.cond.wait()
            self.used += size

    def give(self, size):
        with self.cond:
            self.used -= size
            self.cond.notify_all()


SENDING = _SendingBudget()


class _PartBuffers(object):
    """Part buffers used again by the next part of the same size, while uploads run.

    Why: a part of 8 MiB or more freed by one thread and allocated again by another is not
    given back to the system by glibc's malloc, which raises its mmap threshold to the largest
    block freed; each thread's arena then keeps the parts it freed. A scheduled run feeding two
    S3 repositories peaked at 153 MiB this way; a new mapping per part instead costs a page
    fault per 4 KiB (0.2-0.3 CPU s per GB). Never more buffers exist than parts were in memory
    at once before; ``clear`` drops them when no upload runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.free = []

    def take(self, size):
        with self.lock:
            for i, buffer in enumerate(self.free):
                if len(buffer) == size:
                    return self.free.pop(i)
        return bytearray(size)

    def give(self, buffer):
        with self.lock:
            self.free.append(buffer)

    def clear(self):
        with self.lock:
            del self.free[:]


PARTS = _PartBuffers()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(when):
    return when.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class _ErrorMappingReader(object):
    """A streaming body whose network errors mid-download become RepositoryErrors."""

    def __init__(self, body, repo, key):
        self.body, self.repo, self.key = body, repo, key

    def read(self, size=-1):
        with self.repo._errors('downloading', self.key):
            try:
                return self.body.read(size if size and size > 0 else None)
            except (IOError, OSError) as exc:
                raise RepositoryError('download of %s broke off: %s' % (self.repo.location(self.key), self.repo.scrub(exc)))

    def readable(self):
        return True
