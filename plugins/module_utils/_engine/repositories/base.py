# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository interface: five verbs, nothing type-specific above it.

Keys are relative to the repository's root (``prefix`` of a bucket, ``path`` of a
directory) and use ``/``. ``put`` is atomic: a reader sees the whole object or nothing.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import abc
import collections
import hashlib
import io
import re

from .. import schema
from ..commands import CommandLog
from ..errors import ConfigError, IntegrityError
from ..pipeline import HashingReader, copy, read_full
from ..schema import Capability, Option

ObjectInfo = collections.namedtuple('ObjectInfo', 'key size modified metadata')
ObjectInfo.__new__.__defaults__ = (None,)

PutResult = collections.namedtuple('PutResult', 'key size sha256 verification')

VERIFY_MODES = ('full', 'size')
# a server that accepts connections and never answers: each try waits `timeout` seconds for an
# answer, and `retries` more tries follow (where the type retries); with these defaults every
# network type gives up within LONGEST_DEFAULT_WAIT seconds (see longest_wait)
DEFAULT_TIMEOUT = 15
DEFAULT_RETRIES = 2
LONGEST_DEFAULT_WAIT = 120


# -- capabilities: declared interfaces a type has beyond the five verbs --------------------------
class StreamingStore(Capability):
    """``put`` also takes ``size=None, sha256=None``: bytes of a dump still being written, stored as
    they come, proven landed as sent; the PutResult gives their size and sha256 (operations.backup
    feeds such stores while the dump runs)."""

    NAME = 'takes a growing dump'
    streams = True


class RangedReads(Capability, metaclass=abc.ABCMeta):
    """Reads any stretch of a stored object (an S3 ranged GET): a laid-out artifact is then
    fetched frame by frame, in the order that lets a restore load while it downloads
    (framefetch.py). Not shown in the docs."""

    @abc.abstractmethod
    def get_range(self, key, start, end):
        """A context manager: a reader of exactly the bytes [start, end) of ``key``."""


class LocalFileStore(Capability):
    """``put`` also takes ``local=``: the path of a local file holding the bytes ``reader`` yields
    (upload's artifact), or None. The store may read that file itself (rsync sends it, b2 hashes
    it ahead for ``large_file_sha1``) but still reads ``reader`` to its end: the caller's hash of
    what was read proves the file is the one that was sent. Not shown in the docs."""


class TreeStore(Capability, metaclass=abc.ABCMeta):
    """Holds file trees as snapshot directories (module ``snapshot``), restored with ``fetch_tree``."""

    NAME = 'file-tree snapshots'
    # the program that writes the snapshots: the ``tool`` their manifests record
    TOOL = None

    @abc.abstractmethod
    def snapshot(self, name, paths, exclude, created, previous, check_mode):
        """Write the tree snapshot ``<name>/<id>`` of the local ``paths``; facts for the manifest."""

    @abc.abstractmethod
    def fetch_tree(self, key, directory, manifest):
        """Copy the snapshot ``key`` into the local ``directory`` and prove it is the manifest's."""


class SelfCheckingStore(Capability, metaclass=abc.ABCMeta):
    """Checks its own storage (``restic check``): verify runs it besides its own reads."""

    NAME = 'checks its own storage'

    @abc.abstractmethod
    def check(self, read_data_subset=None):
        """Check the store's structure (and re-read ``read_data_subset``); raise IntegrityError on damage."""


def checked_key(key):
    """``key`` if it stays inside the repository's root, else ConfigError. The last line of
    defence where a key becomes a path or an object name: names read from storage are
    validated before (manifest.validate_stored_names), this holds whatever slipped through.
    A trailing ``/`` (a listing prefix) is allowed; ``..``, ``.``, empty segments, a leading
    ``/``, backslashes and control characters are not."""
    parts = key.split('/') if isinstance(key, str) else None
    if parts and parts[-1] == '':
        parts.pop()  # a prefix such as "crm/"
    if (parts is None or key.startswith('/') or any(p in ('', '.', '..') for p in parts)
            or any(c == '\\' or ord(c) < 32 or ord(c) == 127 for c in key)):
        raise ConfigError('refusing the key %r: it would leave the repository\'s root' % (key,),
                          'a name read from a manifest, a listing or a job was altered; nothing was written')
    return key


class Repository(object):
    """Base class. Subclasses set ``type``, ``DESCRIPTION`` and ``OPTIONS`` (the options they take
    besides those below) and implement the five verbs; ``required`` and ``secret_options`` are
    derived from ``OPTIONS``."""

    type = None
    # the documentation of the type: lines of the ``type`` option's description
    DESCRIPTION = ()
    # the options every repository type takes; a type adds its own in its OPTIONS
    OPTIONS = (
        Option('name', description=[
            'A short stable name for the repository (for example C(offsite-eu)), used as the '
            'C(repository) label of the metrics and in reports.',
            'Defaults to the repository\'s root location (type, bucket or host, prefix or path).']),
        Option('timeout', 'int', description=[
            'Seconds one try waits for a server to connect or answer (default 15; C(s3), C(sftp), C(rsync), '
            'C(restic)). With the defaults a server that accepts connections and never answers fails the '
            'repository with C(error=unreachable) within 2 minutes.',
            'C(s3) connect and read timeout of each try; C(sftp) connecting, the SSH banner, authentication, '
            'opening the SFTP channel and every SFTP request; C(rsync) ssh\'s C(ConnectTimeout) and '
            'C(ServerAliveInterval) (3 keepalives); C(restic) each try of the first look into the repository.']),
        Option('retries', 'int', description=[
            'Tries after the first (default 2; C(s3) requests with botocore\'s standard backoff, C(restic)\'s '
            'first look). SSH connections are not retried.']),
        Option('verify', default='full', choices=VERIFY_MODES, description=[
            'How an upload is proven. C(full) checks size and content (S3 per-part MD5 and the '
            'multipart ETag, or a re-read sha256 where the ETag is no MD5; B2 the SHA-1 of a small '
            'file or of every part of a large file; SFTP and local re-read the object and compare '
            'its sha256). C(size) checks only the size.']),
        Option('legacy_timezone', description=[
            'Time zone (IANA name) in which seed-script file names such as '
            'C(crm_backup_20251028_140000.sql.gz) were stamped. Defaults to UTC.']),
    )
    # derived from OPTIONS (schema.finish_class): names that must be set, names holding secrets
    required = ()
    secret_options = ()
    # whether ``put`` takes bytes whose size and sha256 are known only at their end (a dump
    # copied while it is written: see operations.backup)
    streams = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        schema.finish_class(cls)

    def __init__(self, options, log=None):
        self.options = schema.accept(type(self), options, 'repository')
        # the caller's log (executed_commands): every command this repository runs is in it
        self.log = log if log is not None else CommandLog()
        if not isinstance(self.options.get('name', ''), str):
            raise ConfigError('a repository name must be a string, not %r' % (self.options['name'],))
        self.verify = self.options.get('verify', 'full')
        if self.verify not in VERIFY_MODES:
            raise ConfigError('verify: %r is not known' % (self.verify,),
                              'use one of: %s' % ', '.join(VERIFY_MODES))
        self.timeout = _whole(self.options.get('timeout', DEFAULT_TIMEOUT), 'timeout', 1)
        self.retries = _whole(self.options.get('retries', DEFAULT_RETRIES), 'retries', 0)
        self.log.mask(self.secrets())

    def longest_wait(self):
        """Seconds one call waits at most for a server that accepts connections and never
        answers, from ``timeout`` and ``retries``; None where nothing is waited for (local)."""
        return None

    def unreachable_hint(self):
        return ('waiting is bounded by the repository options timeout (%d s per try) and retries (%d)'
                % (self.timeout, self.retries))

    # -- the five verbs --------------------------------------------------------------
    def put(self, key, reader, size, sha256):
        """Store ``size`` bytes from ``reader`` at ``key`` atomically and prove that what
        landed has that size and sha256 (as far as ``verify`` asks). Returns PutResult.

        Where ``streams`` is true, ``size`` and ``sha256`` may be None: everything ``reader``
        yields is stored, what landed is proven equal to what was sent, and the PutResult
        gives the size and sha256 of what was sent, for the caller to compare."""
        raise NotImplementedError

    def get(self, key):
        """Context manager yielding a binary reader of the object."""
        raise NotImplementedError

    def list(self, prefix):
        """ObjectInfo of every object whose key starts with ``prefix``."""
        raise NotImplementedError

    def stat(self, key):
        """ObjectInfo of ``key`` (with metadata where the store keeps it), or None."""
        raise NotImplementedError

    def delete(self, key):
        """Delete ``key``; deleting a missing key is not an error."""
        raise NotImplementedError

    # -- immutability and leftovers (optional; stores without them keep these defaults) ----
    def locked_until(self, key):
        """The time until which ``key`` cannot be deleted (an S3 Object Lock), or None."""
        return None

    def extend_lock(self, key, until, dry_run=False):
        """Make ``key`` undeletable until at least ``until`` (``dry_run``: only tell). Returns
        ``until`` when the lock was (or would be) extended; None when it already lasts that
        long or the store or the object has no lock to extend."""
        return None

    def abort_incomplete_uploads(self, prefix, before, dry_run=False):
        """Abort uploads under ``prefix`` started before ``before`` that never completed
        (S3 multipart uploads; ``dry_run``: only list them); returns their keys. Stores that write ``.partial`` files
        instead leave this to retention's leftover cleaning."""
        return []

    # -- shared conveniences -----------------------------------------------------------
    def location(self, key=''):
        """Where ``key`` lives, for humans: no credentials in it."""
        raise NotImplementedError

    def describe(self):
        return {'type': self.type, 'location': self.location()}

    def series_name(self):
        """What metrics call this repository: its ``name`` option, else its root location
        (type, bucket or host, prefix or path). Never a key, so the series stays the same
        from one backup to the next."""
        return self.options.get('name') or self.location()

    def secrets(self):
        found = [self.options.get(name) for name in self.secret_options if self.options.get(name)]
        # credentials written into endpoint_url (https://user:pass@host) are secrets too
        return found + [s for s in [url_secret(self.options.get('endpoint_url'))] if s]

    def scrub(self, text):
        """``text`` written by a library (an exception's message) without our secrets."""
        text = str(text)
        for secret in self.secrets():
            if secret and len(str(secret)) > 3:
                text = text.replace(str(secret), '***')
        return text

    def put_bytes(self, key, data):
        return self.put(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())

    def get_bytes(self, key):
        out = io.BytesIO()
        with self.get(key) as reader:
            copy(reader, out)
        return out.getvalue()

    def sending(self, reader, size):
        """``reader`` as a put sends it: never more than ``size`` bytes (a writer must not
        take more than the manifest promises); of unknown size, counted and hashed (``size``,
        ``hexdigest()``) for the PutResult, unless it hashes already (a fan-out's reader: the
        stream was hashed once for every repository)."""
        if size is not None:
            return _Limited(reader, size)
        return reader if isinstance(reader, HashingReader) else HashingReader(reader)

    def check_landed(self, key, size, sha256, landed_size, landed_sha256=None):
        """Compare what a store reports back with what we sent; raise on a mismatch."""
        if landed_size != size:
            raise IntegrityError('%s holds %s bytes after upload, %s were sent'
                                 % (self.location(key), landed_size, size),
                                 'the upload was truncated; it was not marked complete, run it again')
        if landed_sha256 is not None and landed_sha256 != sha256:
            raise IntegrityError('%s does not read back with the checksum that was sent' % self.location(key),
                                 'the store corrupted the upload; it was not marked complete')

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# -- options that several types share (each type lists the ones it takes) -----------------------
ROOT_IN_BUCKET = (
    Option('bucket', required=True, description='Bucket name.'),
    Option('prefix', description='Key prefix inside the bucket under which backup sets are stored.'),
)
AWS_CREDENTIALS = (
    Option('region', env=('AWS_REGION', 'AWS_DEFAULT_REGION'), description='Region of the bucket.'),
    Option('access_key', no_log=False, env='AWS_ACCESS_KEY_ID', description='Access key id.'),
    Option('secret_key', secret=True, env='AWS_SECRET_ACCESS_KEY', description='Secret access key.'),
    Option('session_token', secret=True, env='AWS_SESSION_TOKEN', description='Session token of temporary credentials.'),
)
B2_CREDENTIALS = (
    Option('key_id', no_log=False, env='B2_APPLICATION_KEY_ID', description=[
        'Application key id.',
        'A key restricted to the bucket and to O(.prefix) is enough; it needs the '
        'capabilities C(listFiles), C(readFiles), C(writeFiles) and C(deleteFiles) '
        '(C(listBuckets) too when the key is not restricted to the bucket).']),
    Option('application_key', secret=True, env='B2_APPLICATION_KEY', description='Application key.'),
)
SSH = (
    Option('host', required=True, description='SSH server.'),
    Option('port', 'int', default=22, description='SSH port; a Hetzner Storage Box uses 23.'),
    Option('user', required=True, description='SSH user.'),
    Option('private_key', 'path', no_log=False, description='Path of the SSH private key on the node running the module.'),
    Option('private_key_passphrase', secret=True, description='Passphrase of O(.private_key).'),
    Option('known_hosts', 'path', description=[
        'Path of a known_hosts file holding the server\'s host key.',
        'One of O(.known_hosts) or O(.host_key) is required; an unknown '
        'or changed host key always fails the connection.']),
    Option('host_key', no_log=False, description='The server\'s public host key, pinned, for example C(ssh-ed25519 AAAA...).'),
)
DIRECTORY = Option('path', required=True, description=[
    'Directory that holds the backup sets. On SFTP a relative path is '
    'relative to the login directory (what a Storage Box expects).'])


def redact_url(url):
    """``url`` without the password (or token) it may carry: https://user:***@host/."""
    if not url:
        return url
    # up to the first @, even across a /: a pasted secret key may hold an unencoded slash
    return re.sub(r'^([A-Za-z][A-Za-z0-9+.-]*://)([^@]*)@', lambda m: m.group(1) + (
        m.group(2).split(':', 1)[0] + ':***' if ':' in m.group(2) else '***') + '@', url)


def url_secret(url):
    """The userinfo part of ``url`` (to scrub from texts others wrote), or None."""
    match = re.match(r'^[A-Za-z][A-Za-z0-9+.-]*://([^@]*)@', url if isinstance(url, str) else '')
    return match.group(1) if match else None


def _whole(value, option, least):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < least or isinstance(value, bool):
        raise ConfigError('%s: %r is not a whole number of at least %d' % (option, value, least))
    return number


class _Limited(object):
    """Read at most ``size`` bytes of ``reader``."""

    def __init__(self, reader, size):
        self.reader, self.left = reader, size

    def read(self, n=-1):
        if self.left <= 0:
            return b''
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = read_full(self.reader, n)
        self.left -= len(data)
        return data
