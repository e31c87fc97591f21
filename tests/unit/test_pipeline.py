# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streams and stages: compress, hash, count, and the verified fetch a restore relies on."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import functools
import hashlib
import io
import random

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import pipeline
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, IntegrityError

COMPRESSIONS = ['zstd', 'gzip', 'none']
_RANDOM = random.Random(20261123)
PAYLOADS = {
    'empty': b'',
    'one-byte': b'x',
    'random': _RANDOM.randbytes(200000),
    # text-like and larger than one CHUNK, so copy() loops
    'compressible': b''.join(b'INSERT INTO t VALUES (%d, \'row %d\');\n' % (i, i % 97) for i in range(30000)),
}


def compressed(data, compression, level=None):
    """(compressed bytes, raw count returned by compress, HashingWriter)"""
    sink = io.BytesIO()
    writer = pipeline.HashingWriter(sink)
    raw = pipeline.compress(io.BytesIO(data), writer, compression, level)
    return sink.getvalue(), raw, writer


@functools.lru_cache(maxsize=None)
def blob_of(data, compression):
    """The compressed bytes of ``data`` (cached: several tests damage the same blob)."""
    return compressed(data, compression)[0]


class ShortReads(object):
    """A reader that hands out at most ``step`` bytes per call, as pipes and sockets do."""

    def __init__(self, data, step):
        self.data, self.step, self.calls = data, step, 0

    def read(self, size=-1):
        self.calls += 1
        size = self.step if size is None or size < 0 else min(size, self.step)
        piece, self.data = self.data[:size], self.data[size:]
        return piece


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize('payload', sorted(PAYLOADS))
@pytest.mark.parametrize('compression', COMPRESSIONS)
def test_compress_then_fetch_verified_round_trip(tmp_path, compression, payload):
    data = PAYLOADS[payload]
    blob, raw, writer = compressed(data, compression)
    assert raw == len(data)
    assert writer.size == len(blob)
    assert writer.hexdigest() == hashlib.sha256(blob).hexdigest()
    if compression == 'none':
        assert blob == data
    elif payload == 'compressible':
        assert len(blob) < len(data) // 5

    out = tmp_path / 'restored'
    size, sha256, raw_size = pipeline.fetch_verified(
        ShortReads(blob, 65536), str(out), compression, expected_size=len(blob),
        expected_sha256=hashlib.sha256(blob).hexdigest())
    assert (size, sha256, raw_size) == (len(blob), hashlib.sha256(blob).hexdigest(), len(data))
    assert out.read_bytes() == data


@pytest.mark.parametrize('compression', ['zstd', 'gzip'])
def test_concatenated_frames_and_members_decompress_whole(tmp_path, compression):
    # zstd frames / gzip members appended to each other (e.g. a resumed stream) are one stream
    first = blob_of(b'first part\n', compression)
    second = blob_of(b'second part\n', compression)
    out = tmp_path / 'restored'
    pipeline.fetch_verified(io.BytesIO(first + second), str(out), compression)
    assert out.read_bytes() == b'first part\nsecond part\n'


def test_gzip_output_is_deterministic():
    # mtime=0 in the gzip header: the same dump compresses to the same bytes and checksum
    data = PAYLOADS['compressible']
    assert compressed(data, 'gzip')[0] == compressed(data, 'gzip')[0]


# -- damage is caught and nothing unproven stays -----------------------------------------------
def flip(blob, position):
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1:]


@pytest.mark.parametrize('compression', COMPRESSIONS)
@pytest.mark.parametrize('where', ['start', 'middle', 'end'])
def test_flipped_byte_is_caught_and_output_removed(tmp_path, compression, where):
    blob = blob_of(PAYLOADS['compressible'], compression)
    position = {'start': 20, 'middle': len(blob) // 2, 'end': len(blob) - 1}[where]
    damaged = flip(blob, position)
    out = tmp_path / 'restored'
    with pytest.raises(IntegrityError) as err:
        pipeline.fetch_verified(io.BytesIO(damaged), str(out), compression, expected_size=len(blob),
                                expected_sha256=hashlib.sha256(blob).hexdigest(), where='s3://b/crm/x')
    assert 's3://b/crm/x' in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize('compression', COMPRESSIONS)
@pytest.mark.parametrize('keep', [0.5, 0.99, 0.0], ids=['half', 'all-but-tail', 'nothing'])
def test_truncated_input_is_caught_and_output_removed(tmp_path, compression, keep):
    blob = blob_of(PAYLOADS['compressible'], compression)
    out = tmp_path / 'restored'
    with pytest.raises(IntegrityError):
        pipeline.fetch_verified(io.BytesIO(blob[:int(len(blob) * keep)]), str(out), compression,
                                expected_size=len(blob), expected_sha256=hashlib.sha256(blob).hexdigest())
    assert not out.exists()


def test_gzip_catches_damage_without_a_manifest(tmp_path):
    # legacy backups have no recorded sha256: gzip's own CRC and length must speak
    blob = blob_of(PAYLOADS['compressible'], 'gzip')
    out = tmp_path / 'restored'
    for damaged in (flip(blob, len(blob) - 6), blob[:len(blob) // 2], blob[:-1]):
        with pytest.raises(IntegrityError) as err:
            pipeline.fetch_verified(io.BytesIO(damaged), str(out), 'gzip')
        assert 'decompression failed' in str(err.value)
        assert not out.exists()


@pytest.mark.parametrize('compression', COMPRESSIONS)
def test_wrong_expected_sha256(tmp_path, compression):
    blob = blob_of(PAYLOADS['random'], compression)
    out = tmp_path / 'restored'
    with pytest.raises(IntegrityError) as err:
        pipeline.fetch_verified(io.BytesIO(blob), str(out), compression, expected_size=len(blob),
                                expected_sha256='0' * 64)
    assert 'checksum' in str(err.value) and '0' * 64 in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize('compression', COMPRESSIONS)
@pytest.mark.parametrize('delta', [-1, 1], ids=['recorded-smaller', 'recorded-larger'])
def test_wrong_expected_size(tmp_path, compression, delta):
    blob = blob_of(PAYLOADS['random'], compression)
    out = tmp_path / 'restored'
    with pytest.raises(IntegrityError) as err:
        pipeline.fetch_verified(io.BytesIO(blob), str(out), compression, expected_size=len(blob) + delta,
                                expected_sha256=hashlib.sha256(blob).hexdigest())
    assert 'has %d bytes but the manifest records %d' % (len(blob), len(blob) + delta) in str(err.value)
    assert not out.exists()


def test_trailing_bytes_after_the_stream_are_hashed(tmp_path):
    # bytes the decompressor does not need still count: they make the checksum differ
    blob = blob_of(PAYLOADS['compressible'], 'zstd')
    out = tmp_path / 'restored'
    with pytest.raises(IntegrityError):
        pipeline.fetch_verified(io.BytesIO(blob + b'\0' * 10), str(out), 'zstd',
                                expected_sha256=hashlib.sha256(blob).hexdigest())
    assert not out.exists()


# -- hashing, counting and short reads ---------------------------------------------------------
def test_hashing_writer_counts_and_hashes_what_passes():
    sink = io.BytesIO()
    writer = pipeline.HashingWriter(sink)
    pieces = [b'abc', b'', b'x' * 100000, b'\0']
    assert [writer.write(p) for p in pieces] == [3, 0, 100000, 1]
    writer.flush()
    assert writer.size == 100004
    assert sink.getvalue() == b''.join(pieces)
    assert writer.hexdigest() == hashlib.sha256(b''.join(pieces)).hexdigest()


def test_hashing_reader_counts_and_hashes_what_is_read():
    data = PAYLOADS['random']
    reader = pipeline.HashingReader(ShortReads(data, 7000))
    got = []
    while True:
        piece = reader.read(10000)
        if not piece:
            break
        got.append(piece)
    assert b''.join(got) == data
    assert reader.size == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()
    # a partial read counts only what was read
    partial = pipeline.HashingReader(io.BytesIO(data))
    partial.read(10)
    assert (partial.size, partial.hexdigest()) == (10, hashlib.sha256(data[:10]).hexdigest())


@pytest.mark.parametrize('length, step, size, expected', [
    (100, 3, 10, 10),     # several short reads make up the request
    (100, 100, 10, 10),   # one read is enough
    (5, 3, 10, 5),        # EOF first: what there is
    (0, 3, 10, 0),        # empty source
    (100, 3, 0, 0),       # nothing asked
], ids=['short-reads', 'one-read', 'eof-first', 'empty', 'zero'])
def test_read_full(length, step, size, expected):
    data = bytes(range(length))
    reader = ShortReads(data, step)
    assert pipeline.read_full(reader, size) == data[:expected]
    if size and length >= size:
        assert reader.calls == -(-size // step)    # no extra read once the request is filled


def test_copy_returns_the_byte_count():
    data = PAYLOADS['compressible']
    sink = io.BytesIO()
    assert pipeline.copy(ShortReads(data, 4096), sink) == len(data)
    assert sink.getvalue() == data


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize('compression, level', [
    ('zstd', None), ('zstd', 1), ('zstd', 19), ('gzip', None), ('gzip', 9), ('none', None),
])
def test_validate_compression_accepts(compression, level):
    pipeline.validate_compression(compression, level)


@pytest.mark.parametrize('compression, level, message', [
    ('lz4', None, 'unknown compression'),
    ('zstd', 0, 'out of range'),
    ('zstd', 20, 'out of range'),
    ('gzip', 10, 'out of range'),
    ('gzip', 0, 'out of range'),
])
def test_validate_compression_rejects(compression, level, message):
    with pytest.raises(ConfigError) as err:
        pipeline.validate_compression(compression, level)
    assert message in str(err.value)


@pytest.mark.parametrize('compression', ['zstd', 'gzip'])
def test_compression_level_is_used(compression):
    data = PAYLOADS['compressible'][:300000]
    fast = compressed(data, compression, 1)[0]
    best = compressed(data, compression, 9)[0]
    assert len(best) < len(fast)


@pytest.mark.xfail(strict=True, reason='known gap: zstandard stream_reader ends quietly on a truncated frame; '
                   'only expected_size/expected_sha256 catch it (always given for our own backups)')
def test_zstd_truncation_without_a_manifest(tmp_path):
    blob = blob_of(PAYLOADS['compressible'], 'zstd')
    with pytest.raises(IntegrityError):
        pipeline.fetch_verified(io.BytesIO(blob[:len(blob) // 2]), str(tmp_path / 'restored'), 'zstd')
