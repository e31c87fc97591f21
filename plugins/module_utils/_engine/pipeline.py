# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Byte streams and the stages they flow through: compress, hash, count, decompress; the
verified fetch. Feeding several consumers at once is fanout.py's.

Everything moves in CHUNK-sized pieces, so memory stays flat whatever the database size.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import errno
import gzip
import hashlib
import os
import traceback
import zlib

from .errors import BackupError, ConfigError, DependencyError, DiskFullError, IntegrityError

try:
    import zstandard
    ZSTD_IMPORT_ERROR = None
except ImportError:
    zstandard = None
    ZSTD_IMPORT_ERROR = traceback.format_exc()

CHUNK = 1024 * 1024
COMPRESSIONS = ('zstd', 'gzip', 'none')
COMPRESSION_EXT_FOR = {'zstd': '.zst', 'gzip': '.gz', 'none': ''}
# zstd 1: on database dumps level 3 costs 2-4x the CPU for no better ratio (bench/)
DEFAULT_LEVEL = {'zstd': 1, 'gzip': 6, 'none': None}
# zstd worker threads when a caller sets none (the dump module's and a job file's default): none.
# At level 1 the reading thread outpaces pg_dump, and a worker added CPU (its job buffers and
# copies) and memory on the database server (bench/README.md)
ZSTD_THREADS = 0


def _need_zstd():
    if zstandard is None:
        raise DependencyError(
            'the Python library zstandard is missing on this node (needed for zstd compression)',
            'pip install zstandard into the interpreter that runs the modules, or use compression: gzip')


class HashingWriter(object):
    """A write-only sink that hashes and counts what passes through to ``target``."""

    def __init__(self, target):
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self):
        self.target.flush()

    def hexdigest(self):
        return self.sha256.hexdigest()


class HashingReader(object):
    """A read-only source that hashes and counts what is read from ``source``."""

    def __init__(self, source):
        self.source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readable(self):
        return True

    def hexdigest(self):
        return self.sha256.hexdigest()


def read_full(reader, size):
    """Read exactly ``size`` bytes unless EOF comes first (pipes return short reads)."""
    parts = []
    missing = size
    while missing > 0:
        data = reader.read(missing)
        if not data:
            break
        parts.append(data)
        missing -= len(data)
    return b''.join(parts)


def chunks(reader, size=CHUNK):
    """The bytes of ``reader`` as an iterator of chunks of at most ``size``."""
    return iter(lambda: reader.read(size), b'')


def copy(reader, writer):
    total = 0
    while True:
        data = reader.read(CHUNK)
        if not data:
            return total
        writer.write(data)
        total += len(data)


def validate_compression(name, level=None):
    if name not in COMPRESSIONS:
        raise ConfigError('unknown compression %r' % (name,), 'use one of: %s' % ', '.join(COMPRESSIONS))
    if name == 'zstd':
        _need_zstd()
        if level is not None and not 1 <= level <= 19:
            raise ConfigError('zstd level %s is out of range' % level, 'use 1 (fastest) to 19')
    if name == 'gzip' and level is not None and not 1 <= level <= 9:
        raise ConfigError('gzip level %s is out of range' % level, 'use 1 (fastest) to 9')


def compress(reader, sink, compression, level=None, threads=None):
    """Compress everything from ``reader`` into ``sink``; returns the raw byte count."""
    level = level or DEFAULT_LEVEL[compression]
    if compression == 'none':
        return copy(reader, sink)
    if compression == 'zstd':
        _need_zstd()
        # threads > 0: zstd compresses in worker threads of its own while we read and hash;
        # 0: in this thread (zstd releases the GIL while it compresses)
        cctx = zstandard.ZstdCompressor(level=level, threads=ZSTD_THREADS if threads is None else threads)
        with cctx.stream_writer(sink, closefd=False) as writer:
            return copy(reader, writer)
    with gzip.GzipFile(fileobj=sink, mode='wb', compresslevel=level, mtime=0) as writer:
        return copy(reader, writer)


def decompressing_reader(reader, compression):
    """A reader that yields the decompressed bytes of ``reader``."""
    if compression == 'none':
        return reader
    if compression == 'zstd':
        _need_zstd()
        # read_size: pull CHUNK-sized reads from the source (default ~128 KiB); measured on a
        # 170 MB artifact from S3: download+verify+decompress 2.0-2.7 s -> 1.6 s, half the CPU
        return zstandard.ZstdDecompressor().stream_reader(reader, read_size=CHUNK, read_across_frames=True)
    return gzip.GzipFile(fileobj=reader, mode='rb')


def check_stored(where, size, sha256, expected_size, expected_sha256):
    """The stored bytes read (their count and sha256) are the manifest's, else IntegrityError."""
    if expected_size is not None and size != expected_size:
        raise IntegrityError('%s has %d bytes but the manifest records %d' % (where, size, expected_size),
                             'the copy is truncated or damaged; restore another backup')
    if expected_sha256 and sha256 != expected_sha256:
        raise IntegrityError('%s does not match its manifest checksum (sha256 %s, expected %s)'
                             % (where, sha256, expected_sha256),
                             'the copy is corrupted; restore another backup')


class VerifiedStream(object):
    """The decompressed bytes of ``reader`` (an artifact's compressed bytes), readable as they
    arrive, and ``finish()`` that proves afterwards those bytes were the ones backed up.

    Whoever consumes the stream writes only somewhere disposable (a work file, a scratch
    database) until ``finish()`` returned; any damage raises IntegrityError that names the
    root cause: a size or checksum mismatch rather than some decompressor's complaint."""

    def __init__(self, reader, compression, expected_size=None, expected_sha256=None, where='the artifact',
                 decrypt=None):
        self.hashed = HashingReader(reader)
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.where = where
        self.raw_size = 0
        # decrypt: a context manager factory (encryption.Encryption.decrypting) between the
        # hash, which covers the ciphertext as stored, and the decompressor
        self._stack = contextlib.ExitStack()
        self.decrypted = self._stack.enter_context(decrypt(self.hashed)) if decrypt else None
        self.plain = decompressing_reader(self.decrypted or self.hashed, compression)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop the decryption tool, if any (after an error: it may still be running)."""
        self._stack.close()

    def read(self, size=-1):
        try:
            data = self.plain.read(size)
        except BackupError as exc:  # the decryption tool failed: wrong key, tampered, truncated
            self._damaged(exc)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            self._damaged(exc)
        except Exception as exc:  # zstandard.ZstdError has no common base with the above
            if zstandard is not None and isinstance(exc, zstandard.ZstdError):
                self._damaged(exc)
            raise
        self.raw_size += len(data)
        return data

    def readable(self):
        return True

    def finish(self):
        """Drain what the decompressor did not need (trailing bytes change the hash), then
        compare size and sha256 with the manifest. Returns (size, sha256, raw_size).
        Decryption is drained to its end too: only there does the tool prove authenticity."""
        if self.decrypted is not None:
            try:
                copy(self.decrypted, _NullWriter())
            except BackupError as exc:
                self._damaged(exc)
        copy(self.hashed, _NullWriter())
        self._check()
        return self.hashed.size, self.hashed.hexdigest(), self.raw_size

    def _check(self):
        check_stored(self.where, self.hashed.size, self.hashed.hexdigest(), self.expected_size, self.expected_sha256)

    def _damaged(self, exc):
        """Decompression failed: read the rest so that bytes differing from the manifest are
        reported as that (the operator's fact), not as a decompressor's complaint. A
        decryption failure on bytes that match the manifest is raised as it is (wrong key:
        ``config``; ciphertext rewritten along with its manifest: ``integrity``)."""
        if self.decrypted is not None:
            self.close()  # the feeding thread must be gone before this thread reads the source
        try:
            copy(self.hashed, _NullWriter())
        except (EOFError, OSError):
            pass
        else:
            self._check()
        if isinstance(exc, BackupError):
            raise exc
        raise IntegrityError('%s is damaged: decompression failed (%s)' % (self.where, exc),
                             'the copy is corrupted or truncated; restore another backup')


def fetch_verified(reader, path, compression, expected_size=None, expected_sha256=None,
                   where='the artifact', decrypt=None, tap=None):
    """Stream ``reader`` (compressed, maybe encrypted bytes) into ``path`` decrypted and
    decompressed, then prove the stored bytes were the ones backed up. Returns (size, sha256,
    raw_size). On any failure the partial file is removed and an error raised: nothing
    unproven stays. ``tap``, if given, is called with each decompressed chunk before it is
    written (``pgcustom.OffsetRecorder.feed``)."""
    try:
        with VerifiedStream(reader, compression, expected_size, expected_sha256, where, decrypt) as stream:
            with open(path, 'wb') as out:
                os.fchmod(out.fileno(), 0o600)
                copy(stream, out if tap is None else Tapped(out, tap))
            return stream.finish()
    except OSError as exc:
        remove_quietly(path)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError('no space left writing %s' % path,
                                'free space there or point work_dir at a larger disk')
        raise
    except BaseException:
        remove_quietly(path)
        raise


class Tapped(object):
    """A writer that shows each chunk to ``tap`` before writing it to ``out``."""

    def __init__(self, out, tap):
        self.out = out
        self.tap = tap

    def write(self, data):
        self.tap(data)
        return self.out.write(data)


class _NullWriter(object):
    def write(self, data):
        return len(data)


def remove_quietly(path):
    """Remove a partial file on the way out of a failure; the original error matters more."""
    try:
        os.unlink(path)
    except OSError:
        pass


def hash_stream(reader):
    """(size, sha256 hex) of everything ``reader`` yields: the re-read that proves an upload."""
    digest, size = hashlib.sha256(), 0
    while True:
        data = reader.read(CHUNK)
        if not data:
            return size, digest.hexdigest()
        digest.update(data)
        size += len(data)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
