# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgcustom: data offsets of pg_dump custom-format archives, found as the bytes pass.

The archives in fixtures/pgcustom are real pg_dump 15 output (fixtures/pgcustom/make.sql says
how they were made): the same database written to a pipe (no offsets) and to a file (offsets,
pg_dump rewrote its TOC). Patching the pipe's archive must give pg_dump's own file. Everything
else is checked against ``reference()``, a second, plain reading of the format written the way
pg_restore reads an archive in order, on real archives cut and damaged at random and on
archives generated here for the versions and word sizes PostgreSQL 15 does not write."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import pgcustom
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import IntegrityError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'pgcustom')
CREATED = slice(16, 51)  # the 7 ints of the creation time in a 1.14 header with 4-byte ints


def fixture(name):
    with open(os.path.join(FIXTURES, name), 'rb') as handle:
        return handle.read()


def record(data, cuts=()):
    """Feed ``data`` to a recorder in pieces cut at ``cuts``; returns the recorder."""
    recorder = pgcustom.OffsetRecorder('the test archive')
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        recorder.feed(data[start:cut])
        start = cut
    return recorder


def patched(tmp_path, data, cuts=()):
    path = tmp_path / 'archive.dump'
    path.write_bytes(data)
    summary = record(data, cuts).patch(str(path))
    return path.read_bytes(), summary


# -- the reference: pg_restore's reading, plainly ------------------------------------------------
class Bad(Exception):
    pass


def reference(data):
    """{dumpId: offset of its data block}, None for a version left alone, Bad if it does not parse."""
    stream = io.BytesIO(data)

    def take(n):
        got = stream.read(n)
        if len(got) != n:
            raise Bad('short')
        return got

    def integer():
        raw = take(1 + int_size)
        if raw[0] > 1:
            raise Bad('sign')
        value = int.from_bytes(raw[1:], 'little')
        return -value if raw[0] else value

    def string():
        length = integer()
        if length > 0:
            take(length)
        return length

    if take(5) != b'PGDMP':
        raise Bad('magic')
    vmaj, vmin, dummy, int_size, off_size, fmt = take(6)
    if not (1, 12) <= (vmaj, vmin) <= (1, 16) or int_size not in (4, 8) or off_size != 8:
        return None
    if fmt != 1:
        raise Bad('format')
    take(1) if (vmaj, vmin) >= (1, 15) else integer()
    for dummy in range(7):
        integer()
    for dummy in range(3):
        string()
    count = integer()
    if count < 0:
        raise Bad('count')
    wanted, seen = set(), set()
    for dummy in range(count):
        dump_id = integer()
        if dump_id <= 0 or dump_id in seen:
            raise Bad('id')
        seen.add(dump_id)
        integer()
        for dummy in range(4):
            string()
        integer()
        for dummy in range(6 if (vmaj, vmin) >= (1, 14) else 5):
            string()
        if (vmaj, vmin) >= (1, 16):
            integer()
        string()
        string()
        while string() >= 0:
            pass
        flag = take(1 + off_size)[0]
        if flag not in (1, 2, 3):
            raise Bad('flag')
        if flag != 3:
            wanted.add(dump_id)

    def chunks():
        while True:
            length = integer()
            if length < 0:
                raise Bad('negative')
            if not length:
                return
            take(length)

    found = {}
    while len(found) < len(wanted):
        at = stream.tell()
        kind = take(1)[0]
        dump_id = integer()
        if dump_id not in wanted or dump_id in found:
            raise Bad('block id')
        found[dump_id] = at
        if kind == 1:
            chunks()
        elif kind == 3:
            while integer():
                chunks()
        else:
            raise Bad('block type')
    if stream.read(1):
        raise Bad('trailing')
    return found


def outcome(data, cuts=()):
    """The recorder's answer in the reference's terms."""
    try:
        return record(data, cuts).result()
    except IntegrityError:
        return Bad


def expected(data):
    try:
        return reference(data)
    except Bad:
        return Bad


# -- real pg_dump output -------------------------------------------------------------------------
def test_the_pipes_archive_patched_is_pg_dumps_own_seekable_file(tmp_path):
    pipe, seek = fixture('pipe.dump'), fixture('seek.dump')
    assert pipe != seek  # pg_dump could not rewrite its TOC on a pipe
    result, summary = patched(tmp_path, pipe)
    assert summary == {'data_offsets': 'recorded', 'entries': 5, 'patched': 5}
    masked = [bytearray(b) for b in (result, seek)]
    for b in masked:
        b[CREATED] = bytes(CREATED.stop - CREATED.start)
    assert masked[0] == masked[1]


def test_an_archive_with_offsets_is_left_as_it_is(tmp_path):
    seek = fixture('seek.dump')
    result, summary = patched(tmp_path, seek)
    assert result == seek and summary == {'data_offsets': 'recorded', 'entries': 5, 'patched': 0}


@pytest.mark.parametrize('name', ['pipe.dump', 'pipe-z6.dump', 'seek.dump'])
def test_the_recorder_agrees_with_the_reference_on_real_archives(name):
    data = fixture(name)
    offsets = reference(data)
    assert len(offsets) == 5 and record(data).result() == offsets


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(['pipe.dump', 'pipe-z6.dump']), data=st.data())
def test_any_cut_into_feeds_gives_the_same_offsets(name, data):
    archive = fixture(name)
    cuts = data.draw(st.lists(st.integers(0, len(archive)), max_size=40))
    assert record(archive, cuts).result() == reference(archive)


def test_byte_by_byte_feeds_give_the_same_offsets():
    archive = fixture('pipe.dump')
    assert record(archive, range(len(archive))).result() == reference(archive)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(['pipe.dump', 'pipe-z6.dump']), data=st.data())
def test_damaged_real_archives_fail_or_agree_with_the_reference(name, data):
    """Cut short, bytes changed, inserted, removed or repeated anywhere: never an offset the
    reference reading would not give."""
    archive = bytearray(fixture(name))
    for dummy in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(archive)))
        how = data.draw(st.sampled_from(['truncate', 'set', 'insert', 'delete', 'repeat']))
        if how == 'truncate':
            del archive[at:]
        elif how == 'set' and at < len(archive):
            archive[at] = data.draw(st.integers(0, 255))
        elif how == 'insert':
            archive[at:at] = data.draw(st.binary(min_size=1, max_size=12))
        elif how == 'delete':
            del archive[at:at + data.draw(st.integers(1, 12))]
        elif how == 'repeat':
            archive[at:at] = archive[at:at + data.draw(st.integers(1, 600))]
    archive = bytes(archive)
    cuts = data.draw(st.lists(st.integers(0, len(archive)), max_size=6))
    assert outcome(archive, cuts) == expected(archive)


# -- generated archives: other versions and word sizes -------------------------------------------
def encode_int(value, int_size):
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(int_size, 'little')


def encode_str(text, int_size):
    if text is None:
        return encode_int(-1, int_size)
    return encode_int(len(text), int_size) + text


def write_archive(version, int_size, entries, with_offsets=False):
    """An archive in the layout of ``version``; entries: (dumpId, blocks) where blocks is None
    (no data), ('data', [chunk, ...]) or ('blobs', [(oid, [chunk, ...]), ...]). The data
    offsets are "not set", as pg_dump writes them to a pipe, or set (``with_offsets``), as it
    writes them to a file. Returns (bytes, {dumpId: offset})."""
    def i(value):
        return encode_int(value, int_size)

    def s(text):
        return encode_str(text, int_size)

    head = b'PGDMP' + bytes([version[0], version[1], 0, int_size, 8, 1])
    head += b'\x00' if version >= (1, 15) else i(0)
    head += b''.join(i(v) for v in (1, 2, 3, 4, 5, 126, 0))
    head += s(b'db') + s(b'15.0') + s(b'15.0')
    toc = []
    for dump_id, blocks in entries:
        entry = i(dump_id) + i(0 if blocks is None else 1) + s(b'1259') + s(b'%d' % dump_id)
        entry += s(b'tag %d' % dump_id) + s(b'TABLE DATA' if blocks else b'TABLE') + i(2)
        entry += s(b'CREATE TABLE x ();') + s(b'') + s(None) + s(b'public') + s(b'')
        if version >= (1, 14):
            entry += s(b'heap')
        if version >= (1, 16):
            entry += i(114)
        toc.append(entry + s(b'postgres') + s(b'false') + s(b'1') + s(b'2') + s(None))
    data, offsets = [], {}
    position = len(head) + len(i(0)) + sum(len(entry) + 9 for entry in toc)
    for dump_id, blocks in entries:
        if blocks is None:
            continue
        offsets[dump_id] = position
        kind, content = blocks
        if kind == 'data':
            block = b'\x01' + i(dump_id) + b''.join(i(len(c)) + c for c in content) + i(0)
        else:
            block = b'\x03' + i(dump_id) + b''.join(
                i(oid) + b''.join(i(len(c)) + c for c in cs) + i(0) for oid, cs in content) + i(0)
        data.append(block)
        position += len(block)
    for n, (dump_id, blocks) in enumerate(entries):
        if blocks is None:
            toc[n] += b'\x03' + bytes(8)
        elif with_offsets:
            toc[n] += b'\x02' + offsets[dump_id].to_bytes(8, 'little')
        else:
            toc[n] += b'\x01' + bytes(8)
    return head + i(len(entries)) + b''.join(toc) + b''.join(data), offsets


chunk = st.binary(min_size=1, max_size=40)
blocks = st.one_of(
    st.none(),
    st.tuples(st.just('data'), st.lists(chunk, max_size=6)),
    st.tuples(st.just('blobs'), st.lists(st.tuples(st.integers(1, 2 ** 31 - 1), st.lists(chunk, max_size=3)),
                                         max_size=3)))
archives = st.tuples(
    st.sampled_from([(1, 12), (1, 13), (1, 14), (1, 15), (1, 16)]),
    st.sampled_from([4, 8]),
    st.lists(blocks, max_size=8))


@settings(max_examples=300, deadline=None)
@given(spec=archives, data=st.data())
def test_generated_archives_of_every_known_version_are_patched_where_they_were_written(tmp_path_factory, spec, data):
    version, int_size, contents = spec
    entries = [(n + 1, b) for n, b in enumerate(contents)]
    archive, offsets = write_archive(version, int_size, entries)
    assert reference(archive) == offsets
    cuts = data.draw(st.lists(st.integers(0, len(archive)), max_size=10))
    result, summary = patched(tmp_path_factory.mktemp('a'), archive, cuts)
    assert summary == {'data_offsets': 'recorded', 'entries': len(offsets), 'patched': len(offsets)}
    assert result == write_archive(version, int_size, entries, with_offsets=True)[0]


@pytest.mark.parametrize('version', [(1, 11), (1, 17), (2, 0)])
def test_an_unknown_version_is_left_as_it_is(tmp_path, version):
    archive, dummy = write_archive((1, 14), 4, [(1, ('data', [b'row\n']))])
    archive = archive[:5] + bytes(version) + archive[7:]
    result, summary = patched(tmp_path, archive)
    assert result == archive
    assert summary == {'data_offsets': 'left as dumped',
                       'reason': 'archive version %d.%d is not one this engine knows' % version}


def test_other_word_sizes_are_left_as_they_are(tmp_path):
    archive, dummy = write_archive((1, 14), 4, [(1, ('data', [b'row\n']))])
    archive = archive[:8] + b'\x02' + archive[9:]
    result, summary = patched(tmp_path, archive)
    assert result == archive and summary['data_offsets'] == 'left as dumped'


# -- what a malformed archive says --------------------------------------------------------------
def malformed(archive):
    with pytest.raises(IntegrityError) as caught:
        record(archive).result()
    assert caught.value.kind == 'integrity'
    assert 'is not a valid pg_dump custom-format archive' in caught.value.message
    return caught.value.message


def test_malformed_archives_are_named_with_what_and_where():
    def i(value):
        return encode_int(value, 4)

    entries = [(1, ('data', [b'a\n', b'b\n'])), (2, None), (3, ('blobs', [(7, [b'\x00' * 9])]))]
    good, offsets = write_archive((1, 14), 4, entries)
    assert reference(good) == offsets
    assert 'no pg_dump custom-format archive' in malformed(b'PGDMX' + good[5:])
    assert '3 byte(s) follow the last data block' in malformed(good + b'abc')
    assert 'ends in the middle of the data block of dumpId 3' in malformed(good[:-3])
    assert 'ends before the data block of dumpId 3' in malformed(good[:offsets[3]])
    assert 'ends in the middle of TOC entry 3 of 3' in malformed(good[:offsets[1] - 30])
    block1 = good[offsets[1]:offsets[3]]
    assert 'a second data block for dumpId 1' in malformed(good[:offsets[3]] + block1 + good[offsets[3]:])
    no_data = good[:offsets[1]] + b'\x01' + i(2) + i(0) + good[offsets[1]:]
    assert 'a data block for dumpId 2, which has no data' in malformed(no_data)
    stranger = good[:offsets[1]] + b'\x01' + i(9) + i(0) + good[offsets[1]:]
    assert 'a data block for dumpId 9, which is not in the TOC' in malformed(stranger)
    negative = good[:offsets[1] + 6] + b'\x01' + good[offsets[1] + 7:]
    assert 'a chunk has a negative length' in malformed(negative)
    unknown = good[:offsets[1]] + b'\x05' + good[offsets[1] + 1:]
    assert 'a data block of unknown type 5' in malformed(unknown)
    flag_at = offsets[1] - 9
    assert 'unknown data offset flag 7' in malformed(good[:flag_at] + b'\x07' + good[flag_at + 1:])
    message = malformed(good[:offsets[1]] + b'\x01' + i(9) + i(0) + good[offsets[1]:])
    assert 'at byte %d' % (offsets[1] + 6) in message


def test_a_malformed_archive_is_not_patched(tmp_path):
    archive = fixture('pipe.dump')[:-1000]
    path = tmp_path / 'archive.dump'
    path.write_bytes(archive)
    with pytest.raises(IntegrityError):
        record(archive).patch(str(path))
    assert path.read_bytes() == archive


def test_recorder_for_only_takes_single_postgresql_custom_archives():
    assert pgcustom.recorder_for({'format': 'custom', 'source': {'type': 'postgresql'}})
    assert pgcustom.recorder_for({'format': 'plain', 'source': {'type': 'postgresql'}}) is None
    assert pgcustom.recorder_for({'format': 'cluster', 'source': {'type': 'postgresql'}}) is None
    assert pgcustom.recorder_for({'format': 'custom', 'source': {'type': 'mysql'}}) is None


def test_a_million_rows_fed_a_mebibyte_at_a_time():
    """A million one-row chunks, fed as the restore feeds them (1 MiB at a time)."""
    row = b'1\t2\t0\t' + b' ' * 84 + b'\n'
    rows = (struct.pack('<BI', 0, len(row)) + row) * 1000000
    archive, offsets = write_archive((1, 14), 4, [(1, ('data', [b'x'])), (2, ('data', [b'y']))])
    first = offsets[2]
    big = archive[:first - 5] + rows + archive[first - 5:]
    recorder = pgcustom.OffsetRecorder()
    view = memoryview(big)
    for at in range(0, len(big), 1 << 20):
        recorder.feed(bytes(view[at:at + (1 << 20)]))
    assert recorder.result() == {1: offsets[1], 2: offsets[2] + len(rows)}
